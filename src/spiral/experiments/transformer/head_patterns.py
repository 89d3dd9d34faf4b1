"""Do the heads learn different things? Per-head attention patterns of a trained GPT.

A 2-layer, 4-head GPT (d_model 64, context 64) is trained on tiny Shakespeare; then, on
validation windows only, for every head of every layer:

* the mean attention distance Σ_s A_ts (t − s) and the row entropy (nats);
* the previous-token share A_{t,t−1} and the self share A_tt;
* the diversity of a layer's heads: the mean Jensen–Shannon divergence (nats) between the
  attention rows of every pair of heads, for the same query.

At initialization (N(0, 0.02) weights) every score is ≈ 0, every head attends almost
uniformly and the heads are interchangeable (diversity ≈ 0); the measurement is how far
apart training pushes them. Chapter: stage 8, "What the heads learn".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import numpy as np

from spiral.experiments.attention.common import row_entropy
from spiral.experiments.framework import Experiment
from spiral.experiments.transformer.common import (
    SmallRecipe,
    shakespeare,
    small_gpt,
    train_small,
)
from spiral.plotting import new_figure


@dataclass(frozen=True)
class Config:
    seed: int = 0
    recipe: SmallRecipe = SmallRecipe(n_layers=2, n_heads=4, d_model=64, context_length=64,
                                      max_steps=800, batch_size=16)
    probe_windows: int = 256
    passage_start: int = 5_000
    passage_len: int = 40


def _js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (nats) between rows of p and q (..., S) -> (...)."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        return (a * (np.log(np.maximum(a, 1e-30)) - np.log(np.maximum(m, 1e-30)))).sum(-1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def head_stats(maps: list[np.ndarray]) -> dict[str, Any]:
    """Per-layer, per-head statistics of attention maps [(B, H, T, T), ...]."""
    layers = []
    for A in maps:
        A = A.astype(np.float64)
        T = A.shape[-1]
        t, s = np.arange(T)[:, None], np.arange(T)[None, :]
        dist = (A * (t - s)).sum(-1)[..., 1:].mean((0, 2))  # (H,), queries with a past
        ent = row_entropy(A)[..., 1:].mean((0, 2))
        prev = np.diagonal(A, offset=-1, axis1=-2, axis2=-1).mean((0, 2))
        self_ = np.diagonal(A, axis1=-2, axis2=-1)[..., 1:].mean((0, 2))
        H = A.shape[1]
        pairs = [float(_js(A[:, i, 1:], A[:, j, 1:]).mean()) for i, j in combinations(range(H), 2)]
        layers.append({"distance": dist.tolist(), "entropy": ent.tolist(),
                       "previous_token": prev.tolist(), "self": self_.tolist(),
                       "diversity": float(np.mean(pairs)) if pairs else 0.0})
    return {"layers": layers}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    tok, _, val = shakespeare()
    r = config.recipe
    T = r.context_length
    model = small_gpt(r, config.seed)
    n = min(config.probe_windows, (len(val) - 1) // T)
    probe = val[: n * T].reshape(n, T)  # (n, T) non-overlapping validation windows
    init = head_stats(model.attention_maps(probe))
    trained = train_small(model, r, config.seed)
    after = head_stats(model.attention_maps(probe))
    start, L = config.passage_start, min(config.passage_len, T)
    passage = val[start: start + L]
    maps = [m[0] for m in model.attention_maps(passage[None])]  # [(H, L, L)] per layer
    T_uniform_dist = float(np.mean([(q) / 2 for q in range(1, T)]))
    return {"init": init, "trained": after, "val_nats": trained["val_nats"],
            "n_layers": r.n_layers, "n_heads": r.n_heads, "passage": tok.decode(passage.tolist()),
            "passage_maps": [m.round(4).tolist() for m in maps],
            "uniform_distance": T_uniform_dist,
            "diversity_ratio": [a["diversity"] / max(b["diversity"], 1e-12)
                                for a, b in zip(after["layers"], init["layers"], strict=True)],
            "max_previous_token": max(max(x["previous_token"]) for x in after["layers"]),
            "table": {"columns": ["layer", "head", "mean distance", "entropy (nats)",
                                  "previous-token share", "self share"],
                      "rows": [[li, h, f"{lay['distance'][h]:.1f}", f"{lay['entropy'][h]:.2f}",
                                f"{lay['previous_token'][h]:.2f}", f"{lay['self'][h]:.2f}"]
                               for li, lay in enumerate(after["layers"])
                               for h in range(r.n_heads)]}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    L, H = results["n_layers"], results["n_heads"]
    chars = [{"\n": "⏎", " ": "␣"}.get(c, c) for c in results["passage"]]
    fig, axes = new_figure(L, H, width=2.1 * H, height=2.2 * L + 0.3)
    axes = np.atleast_2d(axes)
    for li in range(L):
        for h in range(H):
            ax = axes[li, h]
            w = np.array(results["passage_maps"][li][h])
            mask = np.triu(np.ones_like(w, dtype=bool), k=1)
            ax.imshow(np.ma.masked_where(mask, w), cmap="Blues", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_facecolor("#f2f2f2")
            stats = results["trained"]["layers"][li]
            ax.set_title(f"layer {li} head {h}\nprev {stats['previous_token'][h]:.2f}, "
                         f"dist {stats['distance'][h]:.1f}", fontsize=7)
            ticks = list(range(0, len(chars), 4))
            ax.set_xticks(ticks, [chars[i] for i in ticks], fontsize=5,
                          family="DejaVu Sans Mono")
            ax.set_yticks(ticks, [chars[i] for i in ticks], fontsize=5,
                          family="DejaVu Sans Mono")
            ax.tick_params(length=1, pad=1)
    fig.supxlabel("key (character read)", fontsize=8)
    fig.supylabel("query (predicting the next character)", fontsize=8)
    return {"head_patterns": fig}


def check(results: dict[str, Any]) -> None:
    """Training makes the heads of every layer differ far more than at initialization."""
    for ratio in results["diversity_ratio"]:
        assert ratio > 10, results["diversity_ratio"]
    for layer in results["trained"]["layers"]:
        assert all(0 <= p <= 1 for p in layer["previous_token"])


EXPERIMENT = Experiment(
    name="transformer_head_patterns", stage=8, title="What the heads learn",
    quick=Config(recipe=replace(Config().recipe, d_model=32, context_length=32, max_steps=80,
                                warmup_steps=10, lr=1e-2, val_tokens=3_000),
                 probe_windows=32),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("val nats", f"{r['val_nats']:.3f}"),
                       ("max previous-token share", f"{r['max_previous_token']:.2f}")],
)
