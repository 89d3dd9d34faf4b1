"""The pipeline bubble: timelines of naive, GPipe and 1F1B, the bubble fraction against
(p − 1)/(m + p − 1), and the activations each schedule keeps in flight.

Four processes each hold one block of a 4-layer GPT. Each step records, per stage and
micro-batch, when its forward and backward ran: on a logical clock carried by the messages
(forward 1 unit, backward 2; free of this machine's noise) and on the wall clock (two cores
shared by four processes and other work: recorded, load average alongside, not a claim).
Chapter: stage 13, "The bubble fraction".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.distributed.pipeline import bubble_fraction
from spiral.distributed.strategies import train
from spiral.distributed.workload import TrainSpec
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    stages: int = 4
    micro_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    timeline_m: int = 4
    memory_m: int = 8
    steps: int = 3
    schedules: tuple[str, ...] = ("naive", "gpipe", "1f1b")


def _events(run: dict[str, Any], step: int, steps: int) -> list[list[float]]:
    out = []
    for r in run["ranks"]:
        ev = np.asarray(r["events"])
        per = len(ev) // steps
        out += ev[step * per:(step + 1) * per].tolist()
    return out


def _run(config: Config, schedule: str, m: int) -> dict[str, Any]:
    spec = replace(TrainSpec(), steps=config.steps, batch_size=16, schedule=schedule,
                   micro_batches=m)
    run = train(spec, config.stages, "pp", timeout_s=300)
    logical = [bubble_fraction(_events(run, s, config.steps), 3, 4) for s in range(config.steps)]
    wall = [bubble_fraction(_events(run, s, config.steps), 5, 6) for s in range(config.steps)]
    return {"run": run, "logical": float(np.mean(logical)), "wall": mean_sd(wall)}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    p = config.stages
    cache: dict[tuple[str, int], dict[str, Any]] = {}

    def get(schedule: str, m: int) -> dict[str, Any]:
        if (schedule, m) not in cache:
            cache[schedule, m] = _run(config, schedule, m)
        return cache[schedule, m]

    sweep = []
    for m in config.micro_batches:
        r = get("gpipe", m)
        sweep.append({"m": m, "formula": (p - 1) / (m + p - 1), "logical": r["logical"],
                      "wall": r["wall"]})
    timelines, memory = {}, []
    for schedule in config.schedules:
        r = get(schedule, config.timeline_m)
        timelines[schedule] = {"events": _events(r["run"], config.steps - 1, config.steps),
                               "logical": r["logical"], "wall": r["wall"]}
    for schedule in ("gpipe", "1f1b"):
        r = get(schedule, config.memory_m)
        memory += [[schedule, s, rk["peak_in_flight"], int(rk["peak_live_bytes"])]
                   for s, rk in enumerate(r["run"]["ranks"])]
    worst = max(abs(x["logical"] - x["formula"]) / x["formula"] for x in sweep)
    peak = {(sch, s): b for sch, s, _, b in memory}
    return {"stages": p, "sweep": sweep, "timelines": timelines, "worst_relative_error": worst,
            "memory": {"columns": ["schedule", "stage", "micro-batches in flight",
                                   "peak live bytes"], "rows": memory},
            "gpipe_m4": {"formula": (p - 1) / (config.timeline_m + p - 1),
                         "logical": timelines["gpipe"]["logical"]},
            "stage0_activation_saving": 1 - peak["1f1b", 0] / peak["gpipe", 0],
            "load_avg": list(os.getloadavg())}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    figs: dict[str, Any] = {}
    fig, axes = new_figure(3, 1, width=7.0, height=5.4, sharex=True)
    for ax, (name, tl) in zip(axes, results["timelines"].items()):
        for stage, kind, micro, t0, t1, *_ in tl["events"]:
            color = PALETTE[0] if kind == 0 else PALETTE[1]
            ax.broken_barh([(t0, t1 - t0)], (stage - 0.4, 0.8), color=color, alpha=0.85)
            ax.text((t0 + t1) / 2, stage, f"{'FB'[int(kind)]}{int(micro)}", ha="center",
                    va="center", fontsize=6, color="white")
        ax.set_yticks(range(results["stages"]))
        ax.set_ylabel("stage")
        ax.invert_yaxis()
        ax.set_title(f"{name}: bubble {tl['logical']:.2f} of the step", fontsize=9)
    axes[-1].set_xlabel("logical time (forward = 1, backward = 2)")
    figs["timelines"] = fig
    fig, ax = new_figure(width=6.0, height=3.4)
    m = [x["m"] for x in results["sweep"]]
    ax.plot(m, [x["formula"] for x in results["sweep"]], "-", color=PALETTE[6])
    direct_label(ax, m, [x["formula"] for x in results["sweep"]], "(p−1)/(m+p−1)")
    ax.plot(m, [x["logical"] for x in results["sweep"]], "o", color=PALETTE[0],
            label="measured, logical clock")
    ax.errorbar(m, [x["wall"]["mean"] for x in results["sweep"]],
                yerr=[x["wall"]["sd"] for x in results["sweep"]], fmt="s", color=PALETTE[1],
                label="measured, wall clock (2 shared cores)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("micro-batches m (p = 4)")
    ax.set_ylabel("bubble fraction")
    ax.legend(fontsize=8, frameon=False)
    figs["bubble_vs_m"] = fig
    return figs


def check(results: dict[str, Any]) -> None:
    assert results["worst_relative_error"] <= 0.10
    rows = results["memory"]["rows"]
    gpipe = {s: n for sch, s, n, _ in rows if sch == "gpipe"}
    onef = {s: n for sch, s, n, _ in rows if sch == "1f1b"}
    assert all(onef[s] <= gpipe[s] for s in gpipe) and onef[0] < gpipe[0]


EXPERIMENT = Experiment(
    name="distributed_pipeline", stage=13, title="Pipeline bubble and in-flight memory",
    quick=Config(stages=2, micro_batches=(4,), timeline_m=4, memory_m=4, steps=1,
                 schedules=("gpipe", "1f1b")),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("worst bubble error", round(r["worst_relative_error"], 4))],
)
