"""Real gradient magnitudes against float16's range: what underflows, and what scaling saves.

A trained model's loss on a validation batch is backpropagated under the bfloat16 policy
(float32's range, so nothing underflows yet) while every gradient that crosses a matmul
boundary is recorded before rounding — the arrays that would flow in float16 — together with
the parameter gradients. The histogram of log₂|g| is drawn against float16's subnormal and
normal ranges; the fraction of nonzero entries that float16 would flush to zero is counted
with no scaling and with the loss scaled by 2^k for several k. Chapter: stage 12.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.amp.autocast import autocast
from spiral.amp.formats import format_of
from spiral.amp.training import underflow_fraction
from spiral.experiments.framework import Experiment
from spiral.experiments.memopt.online import _model
from spiral.nn import functional as F
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    standin_steps: int = 200
    batch: int = 16
    scales: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24)  # loss scaled by 2^k


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.data import get_splits

    with tempfile.TemporaryDirectory() as folder:
        pre, which = _model(config, folder)  # type: ignore[arg-type]
    model = pre.model
    T = model.config.context_length
    val = np.array(pre.tokenizer.encode(get_splits("shakespeare").val), dtype=np.int64)
    starts = rng.integers(0, len(val) - T - 1, config.batch)
    x = np.stack([val[s:s + T] for s in starts])
    y = np.stack([val[s + 1:s + T + 1] for s in starts])
    recorded: list[np.ndarray] = []
    with autocast("bfloat16", record=recorded):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    acts = np.concatenate([np.abs(g).ravel() for g in recorded])
    params = np.concatenate([np.abs(p.grad).ravel() for p in model.parameters()])
    f16 = format_of("float16")
    out: dict[str, Any] = {"model": which, "loss": float(loss.item()),
                           "n_boundary_entries": int(acts.size)}
    for key, vals in (("boundary", acts), ("param", params)):
        nz = vals[vals > 0]
        out[key] = {"hist": np.histogram(np.log2(nz), bins=np.arange(-60, 20))[0].tolist(),
                    "median_log2": float(np.median(np.log2(nz))),
                    "underflow": {str(k): underflow_fraction(nz, "float16", 2.0**k)
                                  for k in config.scales},
                    "overflow": {str(k): float(np.mean(nz * 2.0**k > f16.max))
                                 for k in config.scales}}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    f16 = format_of("float16")
    fig, (ax, bx) = new_figure(1, 2, width=11.0, height=3.4)
    edges = np.arange(-60, 19)
    for i, key in enumerate(("boundary", "param")):
        h = np.array(results[key]["hist"], dtype=float)
        ax.step(edges, h / h.sum(), where="post", color=PALETTE[i],
                label="activation gradients at matmul boundaries" if key == "boundary"
                else "parameter gradients")
    for v, ls in ((f16.smallest_subnormal, ":"), (f16.smallest_normal, "--"), (f16.max, "-")):
        ax.axvline(np.log2(v), color=PALETTE[6], ls=ls, lw=1)
    ax.axvspan(-60, np.log2(f16.smallest_subnormal) - 1, color=PALETTE[1], alpha=0.08)
    ax.set_xlabel("log₂ |g| (grey lines: float16's smallest subnormal, normal, max)")
    ax.set_ylabel("fraction of entries")
    ax.legend(frameon=False, fontsize=8)
    for i, key in enumerate(("boundary", "param")):
        ks = [int(k) for k in results[key]["underflow"]]
        bx.plot(ks, [100 * results[key]["underflow"][str(k)] for k in ks], "o-",
                color=PALETTE[i], label=key)
    bx.set_xlabel("loss scaled by 2^k")
    bx.set_ylabel("% of nonzero entries flushed to 0 in float16")
    bx.legend(frameon=False, fontsize=8)
    return {"gradient_underflow": fig}


def check(results: dict[str, Any]) -> None:
    b = results["boundary"]
    assert b["underflow"]["0"] > 0.0  # without scaling, float16 loses real gradients
    assert b["underflow"]["16"] < b["underflow"]["0"]  # 2^16 recovers most of them
    assert b["overflow"]["0"] == 0.0


EXPERIMENT = Experiment(
    name="memopt_underflow", stage=12, title="Gradient magnitudes against float16's range",
    quick=Config(base="(stand-in)", standin_steps=20, batch=4), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("underflow, no scaling", r["boundary"]["underflow"]["0"]),
                       ("underflow, 2^16", r["boundary"]["underflow"]["16"])],
)
