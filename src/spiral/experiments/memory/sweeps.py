"""Memory against batch, context, width and depth: the analytic peak against the profiler.

One knob at a time around the baby model (B = 8, T = 64, d_model = 128, 4 layers, 4 heads,
AdamW), each point measured by the profiler and predicted by the model. Two laws follow
from the derivation and are fitted to the measurements:

    peak(B) = α + β·B                       (every activation is ∝ B; weights are not)
    peak(T) = a·T² + b·T + c,  a ≈ L·B·H·s   (the saved attention probabilities, one
                                             B·H·T² array per layer, are alive at the peak)

Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.memory.common import MiB, measure
from spiral.models.gpt import GPTConfig
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    contexts: tuple[int, ...] = (16, 32, 64, 128, 192, 256)
    widths: tuple[int, ...] = (32, 64, 128, 256, 384)
    depths: tuple[int, ...] = (1, 2, 4, 8)
    B: int = 8
    T: int = 64
    vocab_size: int = 65


def _base(config: Config) -> GPTConfig:
    return GPTConfig.preset("baby", config.vocab_size, context_length=max(config.contexts))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    base = _base(config)
    sweeps: dict[str, list[dict[str, Any]]] = {
        "batch": [measure(base, b, config.T, seed) for b in config.batches],
        "context": [measure(base, config.B, t, seed) for t in config.contexts],
        "width": [measure(replace(base, d_model=w), config.B, config.T, seed)
                  for w in config.widths],
        "depth": [measure(replace(base, n_layers=d), config.B, config.T, seed)
                  for d in config.depths],
    }
    errs = [abs(p["rel_error"]) for pts in sweeps.values() for p in pts]
    bs = np.array(config.batches, dtype=float)
    mb = np.array([p["measured"] for p in sweeps["batch"]], dtype=float)
    beta, alpha = np.polyfit(bs, mb, 1)
    lin_resid = float(np.max(np.abs(alpha + beta * bs - mb) / mb))
    ts = np.array(config.contexts, dtype=float)
    mt = np.array([p["measured"] for p in sweeps["context"]], dtype=float)
    a, b, c = np.polyfit(ts, mt, 2)
    s = 4
    a_derived = base.n_layers * config.B * base.n_heads * s
    rows = [[knob, len(pts), f"{min(p['measured'] for p in pts) / MiB:.1f} – "
             f"{max(p['measured'] for p in pts) / MiB:.1f}",
             f"{max(abs(p['rel_error']) for p in pts):.4%}"] for knob, pts in sweeps.items()]
    return {"sweeps": sweeps, "n_points": len(errs), "max_abs_rel_error": max(errs),
            "batch_fit": {"alpha_mib": alpha / MiB, "beta_mib": beta / MiB,
                          "max_rel_residual": lin_resid},
            "context_fit": {"a": a, "b": b, "c": c, "a_derived": a_derived,
                            "a_ratio": a / a_derived},
            "table": {"columns": ["knob", "points", "measured peaks (MiB)",
                                  "max |model − profiler| / profiler"], "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 4, width=10.0, height=2.8)
    for ax, (knob, pts) in zip(axes, results["sweeps"].items()):
        key = {"batch": "B", "context": "T", "width": "d_model", "depth": "n_layers"}[knob]
        x = [p[key] for p in pts]
        ax.plot(x, [p["measured"] / MiB for p in pts], "o", color=PALETTE[0], ms=4,
                label="measured")
        ax.plot(x, [p["predicted"] / MiB for p in pts], "-", color=PALETTE[1], lw=1.0,
                label="predicted")
        ax.set_xlabel({"batch": "batch B", "context": "context T", "width": "d_model",
                       "depth": "layers"}[knob])
        if knob == "context":
            cf = results["context_fit"]
            xs = np.linspace(min(x), max(x), 50)
            ax.plot(xs, (cf["a"] * xs**2 + cf["b"] * xs + cf["c"]) / MiB, ":",
                    color="#777777", lw=1.0, label="a·T² + b·T + c")
    axes[0].set_ylabel("peak of one step (MiB)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    return {"sweeps": fig}


def check(results: dict[str, Any]) -> None:
    assert results["max_abs_rel_error"] < 0.05, results["max_abs_rel_error"]
    assert results["batch_fit"]["max_rel_residual"] < 0.05
    assert results["context_fit"]["a"] > 0


EXPERIMENT = Experiment(
    name="memory_sweeps", stage=11, title="Memory against batch, context, width and depth",
    quick=Config(batches=(1, 4, 16), contexts=(16, 64, 128), widths=(32, 128),
                 depths=(1, 2), B=2, T=32),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("points", r["n_points"]),
                       ("max |model - profiler| / profiler", r["max_abs_rel_error"]),
                       ("fitted a / derived L·B·H·s", r["context_fit"]["a_ratio"])],
)
