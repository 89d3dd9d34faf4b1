"""Memory per rank under data parallelism and ZeRO 1, 2, 3, measured against the derivation.

Each rank counts the bytes of the parameter, gradient and Adam-moment arrays it holds right
after backward (before the optimizer step), where the derivation says (Ψ elements of b
bytes; moments in the parameters' dtype, no fp32 master copy):

    DP 4Ψb,  ZeRO-1 (2 + 2/N)Ψb,  ZeRO-2 (1 + 3/N)Ψb,  ZeRO-3 4Ψb/N.

Counted directly from the arrays (a view of an array already counted adds nothing).
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
    rows, worst = [], 0.0
    for world in config.worlds:
        for stage in range(4):
            r = train(spec, world, "dp" if stage == 0 else f"zero{stage}", timeout_s=300)
            derived = zero_memory_elements(psi, world, stage)
            for rank in r["ranks"]:
                mem = rank["memory"]
                total = sum(mem.values())
                err = abs(total - b * derived["total"]) / (b * derived["total"])
                worst = max(worst, err)
                if rank["rank"] == 0:
                    rows.append([world, stage, mem["params"], mem["grads"], mem["optim"],
                                 total, round(b * derived["total"]), round(100 * err, 3)])
    return {"psi": psi, "bytes_per_element": b, "worst_relative_error": worst,
            "table": {"columns": ["N", "ZeRO stage", "params (B)", "grads (B)", "Adam (B)",
                                  "total (B)", "derived (B)", "error %"], "rows": rows}}


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
    axes[0].set_ylabel("kB per rank (model states)")
    axes[0].legend(fontsize=7, frameon=False)
    return {"memory_per_rank": fig}


def check(results: dict[str, Any]) -> None:
    assert results["worst_relative_error"] <= 0.05


EXPERIMENT = Experiment(
    name="distributed_zero_memory", stage=13, title="Memory per rank vs ZeRO stage",
    quick=Config(worlds=(2,), d_model=16, steps=2), full=Config(), run=run, plot=plot,
    check=check, summary=lambda r: [("worst error", round(r["worst_relative_error"], 5))],
)
