"""Memory against recompute as the number of checkpointed segments varies.

A GPT of n blocks is cut into c equal segments (c = 0: no checkpointing). The profiler of
stage 11 measures the peak of one AdamW step; the prediction starts from stage 11's model
of the plain step and applies the chapter's accounting, with x the bytes of one block
input, a of one block's saved activations, g of one block's parameter gradients:

    M(c) = M_plain − n·a + x + max_k [ k·x + (n − k·n/c)·g + (n/c)·a ]

(while segment k is recomputed and backpropagated, the inputs of segments 1..k are still
stored, the parameter gradients of every later block already exist, and segment k's n/c
blocks hold their activations; the +x is the recomputed segment's output). The textbook
c·x + (n/c)·a alone is minimised at c = √(n·a/x); the gradients that accumulate during
backward tilt the real optimum. Gradients are checked bit-identical to the plain run and
the recompute is counted (block forwards per step) and timed (with the load average).
Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.nn.checkpoint import run_segments
from spiral.optim import AdamW
from spiral.plotting import PALETTE, new_figure
from spiral.profiling.memory import activations_by_layer, predict_training_memory, profile_step

MiB = 2**20


@dataclass(frozen=True)
class Config:
    n_layers: int = 16
    d_model: int = 64
    n_heads: int = 4
    B: int = 8
    T: int = 64
    vocab_size: int = 65
    repeats: int = 3


class _Segmented(GPT):
    """The GPT with an explicit list of segment sizes (the sweep's c equal segments)."""

    sizes: list[int] = []
    block_calls = 0

    def hidden(self, idx: Any, need_weights: bool = False) -> Any:
        ids = np.asarray(idx, dtype=np.int64)
        x = self.drop(self._embed(ids))

        def counted(blk: Any) -> Any:
            def f(z: Any) -> Any:
                self.block_calls += 1
                return blk(z)
            return f

        x = run_segments([counted(b) for b in self.blocks], self.sizes, x)
        return (self.final_norm(x) if self.final_norm is not None else x), []


def _model(c: GPTConfig, sizes: list[int], seed: int) -> _Segmented:
    m = _Segmented(c, rng=np.random.default_rng(seed))
    m.sizes = sizes
    return m


def predict(c: GPTConfig, B: int, T: int, segments: int) -> int:
    """The chapter's M(c) from stage 11's plain-step model (see the module docstring)."""
    plain = predict_training_memory(c, B, T, "adamw").peak_visible
    if segments == 0:
        return plain
    n = c.n_layers
    a = activations_by_layer(c, B, T)["block0"]
    x = B * T * c.d_model * 4
    g = 4 * sum(p.data.size for p in GPT(replace(c, n_layers=1)).blocks[0].parameters())
    s = n // segments
    worst = max(k * x + (n - k * s) * g + s * a for k in range(1, segments + 1))
    return plain - n * a + x + worst


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    c = GPTConfig(vocab_size=config.vocab_size, context_length=config.T,
                  n_layers=config.n_layers, n_heads=config.n_heads, d_model=config.d_model)
    n = c.n_layers
    r = np.random.default_rng(seed)
    x, y = r.integers(0, c.vocab_size, (config.B, config.T)), r.integers(0, c.vocab_size,
                                                                          (config.B, config.T))
    rows: list[dict[str, Any]] = []
    ref_grads: list[np.ndarray] = []
    for segs in [0] + [d for d in range(1, n + 1) if n % d == 0]:
        sizes = [n // segs] * segs if segs else []
        m = _model(c, sizes, seed)
        tl = profile_step(m, (x, y), AdamW(m.parameters(), lr=1e-3))
        m2 = _model(c, sizes, seed)
        m2.block_calls = 0
        times = []
        for _ in range(config.repeats):
            t0 = time.perf_counter()
            F.cross_entropy(m2(x), y).backward()
            times.append(time.perf_counter() - t0)
            grads = [p.grad.copy() for p in m2.parameters()]
            m2.zero_grad()
        if not segs:
            ref_grads = grads
        rows.append({"segments": segs, "measured": tl.peak, "predicted": predict(c, config.B,
                     config.T, segs), "peak_op": tl.peak_op,
                     "block_forwards": m2.block_calls // config.repeats,
                     "seconds": min(times),
                     "bit_identical": all(np.array_equal(a, b) for a, b in zip(ref_grads,
                                                                               grads))})
    for row in rows:
        row["rel_error"] = (row["predicted"] - row["measured"]) / row["measured"]
        row["time_ratio"] = row["seconds"] / rows[0]["seconds"]
    a = activations_by_layer(c, config.B, config.T)["block0"]
    xb = config.B * config.T * c.d_model * 4
    best = min(rows[1:], key=lambda r: r["measured"])
    return {"rows": rows, "n_layers": n, "a_over_x": a / xb,
            "textbook_optimum": float(np.sqrt(n * a / xb)), "sqrt_n": float(np.sqrt(n)),
            "best_segments": best["segments"],
            "best_saving": 1 - best["measured"] / rows[0]["measured"],
            "max_abs_rel_error": max(abs(r["rel_error"]) for r in rows),
            "loadavg": list(os.getloadavg())}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["rows"][1:]
    plain = results["rows"][0]
    fig, (ax, bx) = new_figure(1, 2, width=9.0, height=3.2)
    cs = [r["segments"] for r in rows]
    ax.plot(cs, [r["predicted"] / MiB for r in rows], color=PALETTE[0], marker="",
            label="predicted M(c)")
    ax.plot(cs, [r["measured"] / MiB for r in rows], "o", color=PALETTE[1],
            label="measured (profiler)")
    ax.axhline(plain["measured"] / MiB, color=PALETTE[6], ls="--", lw=1,
               label="no checkpointing")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"checkpointed segments c (n = {results['n_layers']} blocks)")
    ax.set_ylabel("peak memory of a training step (MiB)")
    ax.legend(frameon=False, fontsize=8)
    bx.bar([str(r["segments"]) for r in results["rows"]],
           [r["block_forwards"] / results["n_layers"] for r in results["rows"]],
           color=PALETTE[2])
    bx.set_xlabel("checkpointed segments c (0 = none)")
    bx.set_ylabel("block forward passes per step / n")
    return {"checkpoint_memory": fig}


def check(results: dict[str, Any]) -> None:
    rows = results["rows"]
    assert all(r["bit_identical"] for r in rows)
    assert results["max_abs_rel_error"] <= 0.05, results["max_abs_rel_error"]
    assert all(r["block_forwards"] == 2 * results["n_layers"] for r in rows[1:])
    assert results["best_saving"] > 0.3
    assert results["best_segments"] == min(rows[1:], key=lambda r: r["predicted"])["segments"]


EXPERIMENT = Experiment(
    name="memopt_checkpoint", stage=12, title="Checkpointing: memory against recompute",
    quick=Config(n_layers=4, d_model=32, n_heads=2, B=4, T=32, repeats=1), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("best segments", r["best_segments"]),
                       ("saving", r["best_saving"]),
                       ("max |rel error|", r["max_abs_rel_error"])],
)
