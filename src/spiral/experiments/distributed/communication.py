"""Communication volume: bytes each rank sends, counted, against the formulas.

Two measurements. (1) One all-reduce of n bytes over N ranks: the naive root sends
(N − 1)·n, the ring 2(N − 1)/N·n per rank. (2) One training step of the small GPT under
each strategy: data parallel and ZeRO 1-3 move 2(N − 1)/N·Ψ·b per rank (ring), tensor
parallel hands 4 activations of B·T·C per layer to the all-reduce (two forward, two
backward), a pipeline sends each micro-batch's activation forward and its gradient back.
Chapter: stage 13, "Ring all-reduce's cost" and "Communication per strategy".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.distributed import collectives as C
from spiral.distributed.runtime import Comm
from spiral.distributed.spawn import spawn
from spiral.distributed.strategies import train
from spiral.distributed.workload import TrainSpec, make_model
from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    worlds: tuple[int, ...] = (2, 3, 4, 6, 8)
    n_elements: int = 2**16 * 3 * 5 * 7 // 7  # divisible by every world size above
    strategies: tuple[str, ...] = ("dp", "zero1", "zero2", "zero3", "tp", "pp")
    strategy_worlds: tuple[int, ...] = (2, 4)


def _one_all_reduce(rank: int, world: int, n: int) -> dict[str, Any]:
    out = {}
    for name, fn in (("naive", C.naive_all_reduce), ("ring", C.ring_all_reduce)):
        comm = Comm()
        fn(comm, np.ones(n, dtype=np.float32))
        out[name] = comm.total_sent()
    return out


def _formula(parallel: str, world: int, spec: TrainSpec) -> float:
    psi = make_model(spec).num_parameters()
    b = np.dtype(spec.dtype).itemsize
    act = spec.batch_size * spec.context_length * spec.d_model * b
    if parallel in ("dp", "zero1", "zero2", "zero3"):
        return 2 * (world - 1) / world * psi * b
    if parallel == "tp":
        return 4 * spec.n_layers * act  # payload handed to all-reduce: 2 forward + 2 backward
    m = spec.micro_batches
    # stage 0 sends m activations forward, plus the tied embedding gradient to the last stage
    return act + m * b + spec.vocab_size * spec.d_model * b


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    collective_rows = []
    for world in config.worlds:
        ranks = spawn(_one_all_reduce, world, config.n_elements, timeout_s=120)
        n = config.n_elements * 4
        collective_rows.append({"world": world, "bytes": n,
                                "naive_root": ranks[0]["naive"], "naive_other": ranks[1]["naive"],
                                "ring": [r["ring"] for r in ranks]})
    spec = replace(TrainSpec(), steps=1)
    table = []
    for parallel in config.strategies:
        for world in config.strategy_worlds:
            # data parallel through our counted ring (gloo's own all-reduce is a black box)
            run_ = train(replace(spec, allreduce="ring") if parallel == "dp" else spec, world,
                         parallel, timeout_s=120)
            sent = run_["sent"][0]
            measured = sum(v for k, v in sent.items() if k not in ("metrics", "broadcast"))
            table.append([parallel, world, int(measured), round(_formula(parallel, world, spec))])
    return {"collectives": collective_rows,
            "per_strategy": {"columns": ["strategy", "N", "bytes sent by rank 0 per step",
                                         "formula"], "rows": table},
            "ring_exact": all(all(b == 2 * (r["world"] - 1) * r["bytes"] // r["world"]
                                  for b in r["ring"]) for r in collective_rows),
            "n_parameters": make_model(spec).num_parameters()}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=6.0, height=3.6)
    rows = results["collectives"]
    N = np.array([r["world"] for r in rows], dtype=float)
    n = rows[0]["bytes"]
    ax.plot(N, [r["naive_root"] / n for r in rows], "o", color=PALETTE[1])
    ax.plot(N, N - 1, "-", color=PALETTE[1], lw=1)
    direct_label(ax, list(N), list(N - 1), "naive, root: N − 1", color=PALETTE[1])
    ax.plot(N, [r["ring"][0] / n for r in rows], "o", color=PALETTE[0])
    ax.plot(N, 2 * (N - 1) / N, "-", color=PALETTE[0], lw=1)
    direct_label(ax, list(N), list(2 * (N - 1) / N), "ring, every rank: 2(N − 1)/N",
                 color=PALETTE[0])
    ax.set_xlabel("ranks N")
    ax.set_ylabel("bytes sent / buffer bytes")
    ax.set_title("One all-reduce: counted bytes (dots) vs formula (lines)")
    ax.set_xlim(N.min() - 0.5, N.max() + 4)
    return {"all_reduce_volume": fig}


def check(results: dict[str, Any]) -> None:
    assert results["ring_exact"], "ring must send exactly 2(N-1)/N of the buffer per rank"
    for r in results["collectives"]:
        assert r["naive_root"] == (r["world"] - 1) * r["bytes"]
    for strategy, world, measured, formula in results["per_strategy"]["rows"]:
        assert abs(measured - formula) <= 0.01 * formula, (strategy, world, measured, formula)


EXPERIMENT = Experiment(
    name="distributed_communication", stage=13, title="Communication volume per rank",
    quick=Config(worlds=(2, 4), n_elements=2**12, strategies=("dp", "tp"),
                 strategy_worlds=(2,)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("ring exact", r["ring_exact"])],
)
