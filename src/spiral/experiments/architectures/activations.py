"""What the feed-forward's hidden units do: GELU vs SwiGLU on a trained character model.

The hidden vector h that the down-projection W₂ reads is

    GELU:    h = GELU(W₁x) = u·Φ(u)                bounded below: min_u u·Φ(u) ≈ −0.17
    SwiGLU:  h = SiLU(W₁x) ⊙ W₃x = u·σ(u) · v      a product: any sign, heavier tails

Two small models identical but for the FFN (same width budget: 2·4·C² vs 3·C·h, h from
:func:`spiral.nn.ffn.swiglu_hidden`) are trained with the stage 8 recipe on tiny
Shakespeare, then h is collected on validation windows: its minimum, the share of negative
and of near-zero entries (|h| < 1 % of its rms), and its excess kurtosis κ − 3.

What to expect: GELU's units never go below its floor. SwiGLU's are a PRODUCT of two
pre-activations; for small u, SiLU(u) ≈ u/2, so h ≈ (u/2)·v, and for independent zero-mean
Gaussians E[u⁴v⁴]/E[u²v²]² = 3·3 = 9: excess kurtosis 6, against a Gaussian's 0 — heavy tails
from the gate itself, before any training. The check asserts the floor and κ_SwiGLU > κ_GELU
+ 2 in every run; whether trained SwiGLU units cross −0.17 is reported, not asserted. The
training is short: the losses are those of short runs, not the architectures' quality.
Chapter: stage 14, "GLU and SwiGLU".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure

GELU_FLOOR = -0.1700  # min of u·Φ(u) is −0.16997 at u ≈ −0.7518


@dataclass(frozen=True)
class Config:
    steps: int = 400
    seeds: tuple[int, ...] = (0, 1, 2)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    eval_tokens: int = 20_000
    probe_windows: int = 16


def _hidden(model: Any, ids: np.ndarray) -> np.ndarray:
    """Every block's FFN hidden vector h (the down-projection's input), flattened."""
    from spiral.autograd import no_grad

    seen: list[np.ndarray] = []
    for blk in model.blocks:
        down = blk.ffn.w2 if hasattr(blk.ffn, "w2") else blk.ffn.proj
        orig = down.forward

        def capture(x: Any, _orig: Any = orig) -> Any:
            seen.append(np.asarray(x.data, dtype=np.float64).ravel())
            return _orig(x)

        down.forward = capture
    try:
        with no_grad():
            model.eval()
            model(ids)
    finally:
        for blk in model.blocks:
            down = blk.ffn.w2 if hasattr(blk.ffn, "w2") else blk.ffn.proj
            del down.forward
    return np.concatenate(seen)


def _stats(h: np.ndarray) -> dict[str, float]:
    rms = float(np.sqrt(np.mean(h * h)))
    z = (h - h.mean()) / h.std()
    return {"min": float(h.min()), "max": float(h.max()), "negative": float(np.mean(h < 0)),
            "near_zero": float(np.mean(np.abs(h) < 0.01 * rms)), "rms": rms,
            "excess_kurtosis": float(np.mean(z ** 4) - 3.0)}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import data
    from spiral.recipes.gpt import train_gpt

    splits = data.get_splits("shakespeare")
    out: dict[str, Any] = {"runs": {}, "hist": {}}
    bins = np.linspace(-1.5, 1.5, 121)
    for ffn in ("gelu", "swiglu"):
        runs, hs = [], []
        for seed in config.seeds:
            r = train_gpt("shakespeare", seed=seed, progress=False, model_overrides=dict(
                d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
                ffn_type=ffn), train_overrides=dict(
                max_steps=config.steps, eval_interval=config.steps,
                eval_tokens=config.eval_tokens, warmup_steps=min(100, config.steps // 4)))
            tok, model = r["tokenizer"], r["model"]
            val = tok.encode_array(splits.val)
            starts = np.random.default_rng(seed).integers(
                0, len(val) - 64, config.probe_windows)
            h = _hidden(model, np.stack([val[s:s + 64] for s in starts]))
            hs.append(h)
            runs.append({"seed": seed, "val_nats": r["val_nats"], **_stats(h),
                         "n_params": r["config"]["n_parameters"]})
        out["runs"][ffn] = runs
        out["hist"][ffn] = np.histogram(np.concatenate(hs), bins=bins, density=True)[0].tolist()
        out[ffn] = {k: mean_sd([x[k] for x in runs]) for k in
                    ("val_nats", "min", "negative", "near_zero", "excess_kurtosis")}
        out[ffn]["below_gelu_floor"] = mean_sd([float(np.mean(h < GELU_FLOOR)) for h in hs])
    out["bins"] = bins.tolist()
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=6.0, height=3.4)
    b = np.asarray(results["bins"])
    mid = (b[1:] + b[:-1]) / 2
    for i, (ffn, label) in enumerate((("gelu", "GELU(W₁x)"), ("swiglu", "SiLU(W₁x) ⊙ W₃x"))):
        ax.plot(mid, results["hist"][ffn], color=PALETTE[i], lw=1.2, label=label)
    ax.axvline(GELU_FLOOR, color="#7f7f7f", lw=0.8, ls=":")
    ax.text(GELU_FLOOR, ax.get_ylim()[1] * 0.9, " GELU floor −0.17", fontsize=7, color="#555555",
            ha="right")
    ax.set_yscale("log")
    ax.set_xlabel("hidden activation h (input of W₂)")
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize=7)
    return {"ffn_activation_histogram": fig}


def check(results: dict[str, Any]) -> None:
    """GELU's hidden units respect the floor in every run; SwiGLU's product has the heavier
    tails (excess kurtosis at least 2 above GELU's) in every run."""
    assert all(r["min"] >= GELU_FLOOR for r in results["runs"]["gelu"])
    for g, s in zip(results["runs"]["gelu"], results["runs"]["swiglu"], strict=True):
        assert s["excess_kurtosis"] > g["excess_kurtosis"] + 2.0, (g, s)


EXPERIMENT = Experiment(
    name="architectures_activations", stage=14, title="GELU vs SwiGLU hidden activations",
    quick=Config(steps=15, seeds=(0,), d_model=32, eval_tokens=2000, probe_windows=4),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"{k} kurtosis", r[k]["excess_kurtosis"]["mean"])
                       for k in ("gelu", "swiglu")],
)
