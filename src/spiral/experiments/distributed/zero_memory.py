"""Memory per rank under data parallelism and ZeRO 1, 2, 3, measured against the derivation.

Stage 11's memory profiler runs inside each rank's step (allocation hooks plus the arrays
ZeRO sets outside the engine) and reports live bytes by tag right after backward (before
the optimizer step), where the derivation says (Ψ elements of b bytes; moments in the
parameters' dtype, no fp32 master copy):

    DP 4Ψb,  ZeRO-1 (2 + 2/N)Ψb,  ZeRO-2 (1 + 3/N)Ψb,  ZeRO-3 4Ψb/N.

A second witness counts the arrays directly (a view of an array already counted adds
nothing). The profiler also sees what the derivation omits: the step's peak holds
activations and, in ZeRO-3, the gathered parameters the graph keeps for backward.
Chapter: stage 13, "ZeRO: memory and communication".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.distributed.strategies import train
from spiral.distributed.workload import TrainSpec, make_model
from spiral.distributed.zero import zero_memory_elements
from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    worlds: tuple[int, ...] = (2, 4)
    d_model: int = 64
    steps: int = 2


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    spec = replace(TrainSpec(), steps=config.steps, d_model=config.d_model)
    psi = make_model(spec).num_parameters()
    b = np.dtype(spec.dtype).itemsize
    rows, peaks, worst, worst_direct = [], [], 0.0, 0.0
    tags = ("param", "grad", "optimizer_state")
    for world in config.worlds:
        for stage in range(4):
            r = train(spec, world, "dp" if stage == 0 else f"zero{stage}", timeout_s=300)
            derived = b * zero_memory_elements(psi, world, stage)["total"]
            for rank in r["ranks"]:
                seen, direct = rank["profiled"], sum(rank["memory"].values())
                total = sum(seen[t] for t in tags)
                worst = max(worst, abs(total - derived) / derived)
                worst_direct = max(worst_direct, abs(direct - derived) / derived)
                if rank["rank"] == 0:
                    rows.append([world, stage, *(seen[t] for t in tags), total,
                                 round(derived), round(100 * (total - derived) / derived, 3),
                                 direct])
                    peak = rank["profiled_peak"]
                    peaks.append([world, stage, sum(peak[t] for t in tags),
                                  peak["activation"], peak["temporary"], sum(peak.values())])
    act = {(r[0], r[1]): r[3] for r in peaks}
    return {"psi": psi, "bytes_per_element": b, "worst_relative_error": worst,
            "worst_relative_error_direct": worst_direct,
            "zero3_extra_at_peak": {str(n): act[n, 3] - act[n, 2] for n in config.worlds},
            "zero3_extra_fraction": {str(n): (act[n, 3] - act[n, 2]) / (b * psi)
                                     for n in config.worlds},
            "table": {"columns": ["N", "ZeRO stage", "params (B)", "grads (B)", "Adam (B)",
                                  "total (B)", "derived (B)", "error %", "direct count (B)"],
                      "rows": rows},
            "peak": {"columns": ["N", "ZeRO stage", "model states (B)", "activations (B)",
                                 "gradients in flight (B)", "peak live (B)"],
                     "rows": peaks}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["table"]["rows"]
    worlds = sorted({r[0] for r in rows})
    fig, axes = new_figure(1, len(worlds), width=7.0, height=3.2, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, world in zip(axes, worlds):
        mine = [r for r in rows if r[0] == world]
        x = np.arange(len(mine))
        bottom = np.zeros(len(mine))
        for k, (label, color) in enumerate((("parameters", PALETTE[0]), ("gradients", PALETTE[2]),
                                            ("Adam m, v", PALETTE[1]))):
            vals = np.array([r[2 + k] for r in mine]) / 1e3
            ax.bar(x, vals, bottom=bottom, color=color, label=label, width=0.6)
            bottom += vals
        ax.plot(x, [r[6] / 1e3 for r in mine], "k_", markersize=22, mew=2, label="derivation")
        ax.set_xticks(x, ["DP", "ZeRO-1", "ZeRO-2", "ZeRO-3"])
        ax.set_title(f"N = {world} ranks", fontsize=9)
    axes[0].set_ylabel("kB per rank (profiler, by tag)")
    axes[0].legend(fontsize=7, frameon=False)
    return {"memory_per_rank": fig}


def check(results: dict[str, Any]) -> None:
    assert results["worst_relative_error"] <= 0.05
    assert results["worst_relative_error_direct"] <= 0.05
    assert all(v > 0 for v in results["zero3_extra_at_peak"].values())


EXPERIMENT = Experiment(
    name="distributed_zero_memory", stage=13, title="Memory per rank vs ZeRO stage",
    quick=Config(worlds=(2,), d_model=16, steps=2), full=Config(), run=run, plot=plot,
    check=check, summary=lambda r: [("worst error (profiler)", round(r["worst_relative_error"], 5)),
                       ("worst error (direct)", round(r["worst_relative_error_direct"], 5))],
)
