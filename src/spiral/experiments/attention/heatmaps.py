"""What the trained attention model looks at, on real text: heatmaps, flow, loss by position.

We train the attention LM (seed 0, the shared recipe) and the stage-4 MLP (fixed window of
8) on tiny Shakespeare and then, on validation text only:

* draw the attention weights A (T × T) of one passage: the upper triangle is exactly zero
  (the causal mask), each row a distribution over the past;
* draw the same weights as information flow: arcs from one query to the keys it reads;
* measure how far back the model looks: the mean attention distance Σ_s A_ts (t − s) and the
  share of attention mass on keys more than 8 positions back (beyond the MLP's window);
* score the loss at each position t of the evaluator's windows: a model that uses a longer
  context should keep improving with t, the MLP should flatten once t reaches its window.

Chapter: stage 7 ("What the trained model attends to", "What attention buys").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.attention.common import (
    Recipe,
    attention_lm,
    fit,
    mlp_lm,
    row_entropy,
    shakespeare,
)
from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    seed: int = 0
    d_model: int = 64
    context_length: int = 64
    recipe: Recipe = Recipe()
    mlp: bool = True
    mlp_window: int = 8
    passage_start: int = 2_000     # offset into the validation split of the drawn passage
    probe_windows: int = 4096      # validation windows for the statistics (capped: all)
    flow_queries: tuple[int, ...] = (20, 40, 63)


def _per_position_nll(model: Any, windows: np.ndarray) -> list[float]:
    """(B, T + 1) windows -> mean NLL (nats) at each of the T positions."""
    return [float(x) for x in model.window_nll(windows).mean(0)]


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _run(config)


def _run(config: Config) -> dict[str, Any]:
    tok, _, val = shakespeare()
    T = config.context_length
    model = attention_lm(config.seed, d_model=config.d_model, context_length=T)
    trained = fit(model, config.recipe, config.seed)
    start = config.passage_start
    passage = val[start: start + T]
    w = model.attention_weights(passage[None])[0]  # (T, T)
    n = min(config.probe_windows, (len(val) - 1) // T)
    windows = val[: n * T + 1]
    probe = np.lib.stride_tricks.sliding_window_view(windows, T + 1)[::T][:n]  # (n, T + 1)
    A = model.attention_weights(probe[:, :-1])  # (n, T, T)
    t_idx, s_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    dist = (A * (t_idx - s_idx)).sum(-1)  # (n, T): expected look-back per query
    far = (A * ((t_idx - s_idx) >= config.mlp_window)).sum(-1)  # mass beyond the MLP window
    uniform_far = np.maximum(0, np.arange(T) + 1 - config.mlp_window) / (np.arange(T) + 1)
    out: dict[str, Any] = {
        "passage": tok.decode(passage.tolist()), "weights": w.round(5).tolist(),
        "val_nats": trained["val_nats"], "n_params": model.num_parameters(),
        "upper_triangle_max": float(np.abs(np.triu(A, k=1)).max()),
        "row_sum_max_error": float(np.abs(A.sum(-1) - 1.0).max()),
        "mean_distance_by_position": dist.mean(0).tolist(),
        "mean_distance_last": float(dist[:, -1].mean()),
        "uniform_distance_last": (T - 1) / 2,
        "far_mass_by_position": far.mean(0).tolist(),
        "far_mass_last": float(far[:, -1].mean()),
        "uniform_far_mass_last": float(uniform_far[-1]),
        "self_weight": float(np.diagonal(A, axis1=1, axis2=2).mean()),
        "entropy_last": float(row_entropy(A[:, -1]).mean()),
        "uniform_entropy_last": float(np.log(T)),
        "attention_nll_by_position": _per_position_nll(model, probe),
        "mlp_window": config.mlp_window, "n_probe": n,
        "flow_queries": sorted({min(q, T - 1) for q in config.flow_queries}),
    }
    nll = out["attention_nll_by_position"]
    w8 = config.mlp_window
    # positions w8..2·w8−1 (the MLP's window is full) against the last 2·w8 positions
    out["attention_nll_first_window"] = float(np.mean(nll[w8: 2 * w8]))
    out["attention_nll_late"] = float(np.mean(nll[-2 * w8:]))
    if config.mlp:
        mlp = mlp_lm(config.seed, context_length=T, n_context=config.mlp_window)
        mlp_trained = fit(mlp, config.recipe, config.seed)
        out["mlp_val_nats"] = mlp_trained["val_nats"]
        out["mlp_nll_by_position"] = _per_position_nll(mlp, probe)
        m = out["mlp_nll_by_position"]
        out["mlp_nll_first_window"] = float(np.mean(m[w8: 2 * w8]))
        out["mlp_nll_late"] = float(np.mean(m[-2 * w8:]))
    return out


def _heatmap(results: dict[str, Any]) -> Any:
    w = np.array(results["weights"])
    T = w.shape[0]
    chars = [c if c not in "\n " else {"\n": "⏎", " ": "␣"}[c] for c in results["passage"]]
    fig, ax = new_figure(width=7.6, height=7.2)
    masked = np.ma.masked_where(np.triu(np.ones_like(w, dtype=bool), k=1), w)
    im = ax.imshow(masked, cmap="Blues", vmin=0.0, vmax=float(w.max()), interpolation="nearest")
    ax.set_facecolor("#f2f2f2")  # the masked future: exactly zero weight, drawn grey
    size = 6.5 if T <= 40 else 5.5
    ticks = list(range(T))
    ax.set_xticks(ticks, [chars[i] for i in ticks], fontsize=size, family="DejaVu Sans Mono")
    ax.set_yticks(ticks, [chars[i] for i in ticks], fontsize=size, family="DejaVu Sans Mono")
    ax.tick_params(length=1.5, pad=1)
    ax.set_xlabel("key position s (the character read)")
    ax.set_ylabel("query position t (predicting the next character)")
    fig.colorbar(im, ax=ax, shrink=0.7, label="attention weight A_ts")
    return fig


def _flow(results: dict[str, Any], queries: tuple[int, ...]) -> Any:
    w = np.array(results["weights"])
    T = w.shape[0]
    chars = [c if c not in "\n " else {"\n": "⏎", " ": "␣"}[c] for c in results["passage"]]
    fig, axes = new_figure(len(queries), 1, width=7.6, height=1.3 * len(queries))
    axes = np.atleast_1d(axes)
    for ax, t in zip(axes, queries, strict=True):
        for s in range(t + 1):
            a = w[t, s]
            if a < 0.01:
                continue
            xs = np.linspace(s, t, 30)
            ys = np.sin(np.linspace(0, np.pi, 30)) * (0.2 + 0.8 * (t - s) / T)
            ax.plot(xs, ys, color=PALETTE[0], lw=0.5 + 6 * a, alpha=min(1.0, 0.2 + a))
        for i, c in enumerate(chars):
            ax.text(i, -0.12, c, ha="center", va="top", fontsize=6, family="DejaVu Sans Mono",
                    color=PALETTE[1] if i == t else "#222222")
        ax.set_xlim(-1, T)
        ax.set_ylim(-0.35, 1.05)
        ax.axis("off")
        ax.set_title(f"query t = {t}: arcs to the keys it reads (width ∝ weight, ≥ 0.01 shown)",
                     fontsize=7, loc="left")
    return fig


def _by_position(results: dict[str, Any]) -> Any:
    fig, axes = new_figure(1, 2, width=7.4, height=3.1)
    pos = list(range(1, len(results["attention_nll_by_position"]) + 1))
    ax = axes[0]
    ax.plot(pos, results["attention_nll_by_position"], color=PALETTE[0], lw=1.2)
    direct_label(ax, pos, results["attention_nll_by_position"], "attention", color=PALETTE[0],
                 dy=-5)
    if "mlp_nll_by_position" in results:
        ax.plot(pos, results["mlp_nll_by_position"], color=PALETTE[2], lw=1.2)
        direct_label(ax, pos, results["mlp_nll_by_position"],
                     f"MLP, window {results['mlp_window']}", color=PALETTE[2], dy=5)
    ax.axvline(results["mlp_window"], color="#999999", lw=0.8, ls=":")
    ax.set_xlabel("position in the window (characters of context + 1)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_xlim(0, len(pos) * 1.35)
    ax = axes[1]
    ax.plot(pos, results["mean_distance_by_position"], color=PALETTE[0], lw=1.2)
    direct_label(ax, pos, results["mean_distance_by_position"], "trained", color=PALETTE[0])
    uni = [(p - 1) / 2 for p in pos]
    ax.plot(pos, uni, color="#999999", lw=1.0, ls=":")
    direct_label(ax, pos, uni, "uniform over the past", color="#777777")
    ax.set_xlabel("query position t + 1")
    ax.set_ylabel("mean look-back Σ A_ts (t − s)")
    ax.set_xlim(0, len(pos) * 1.6)
    return fig


def plot(results: dict[str, Any]) -> dict[str, Any]:
    return {"heatmap": _heatmap(results), "flow": _flow(results, tuple(results["flow_queries"])),
            "by_position": _by_position(results)}


def check(results: dict[str, Any]) -> None:
    # causal structure: nothing above the diagonal, exactly; every row a distribution
    assert results["upper_triangle_max"] == 0.0
    assert results["row_sum_max_error"] < 1e-5
    # the trained model learned something, and its head is selective: it reads a few
    # earlier characters, not a uniform average of the past, and rarely its own position
    assert results["val_nats"] < 3.0
    assert results["mean_distance_last"] < 0.5 * results["uniform_distance_last"]
    assert results["entropy_last"] < results["uniform_entropy_last"] - 1.0
    assert results["self_weight"] < 0.5


EXPERIMENT = Experiment(
    name="attention_heatmaps", stage=7, title="Attention on real text",
    quick=Config(d_model=32, context_length=32, mlp=False, probe_windows=32,
                 flow_queries=(10, 31),
                 recipe=replace(Recipe(), max_steps=600, batch_size=16, seq_len=32, lr=1e-2,
                                warmup_steps=20, val_tokens=4096)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("val", r["val_nats"]), ("MLP val", r.get("mlp_val_nats")),
                       ("mean look-back at last position", r["mean_distance_last"]),
                       ("mass beyond the MLP window", r["far_mass_last"])],
)
