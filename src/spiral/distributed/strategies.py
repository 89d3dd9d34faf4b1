"""One training run under each parallel strategy, on real processes, and its merged result.

``train(spec, nproc, parallel)`` starts ``nproc`` processes (:func:`spawn`), each runs
:func:`run_rank` — the same model from the same seed, the same global batches — wrapped in
one strategy:

=========  ==========================================================================
``dp``     data parallel (DDP semantics; ``spec.allreduce`` naive | ring | bucketed)
``tp``     tensor parallel over all ranks (Megatron attention and FFN)
``pp``     pipeline parallel (``spec.schedule`` naive | gpipe | 1f1b, m micro-batches)
``zero1``  ZeRO stage 1, ``zero2`` stage 2, ``zero3`` stage 3
``dp_tp``  ``spec.tp``-way tensor parallel inside (N / tp)-way data parallel
=========  ==========================================================================

and the ranks' pieces are merged back into one full set of parameters, comparable with
:func:`spiral.distributed.workload.train_single`. Chapter: stage 13.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from spiral.distributed.data_parallel import DistributedDataParallel
from spiral.distributed.pipeline import PipelineStage
from spiral.distributed.runtime import Comm, grid
from spiral.distributed.spawn import spawn
from spiral.distributed.tensor_parallel import parallelize_gpt, unshard_state
from spiral.distributed.workload import (
    TrainSpec,
    global_batches,
    loss_fn,
    make_model,
    make_optimizer,
    state_of,
)
from spiral.distributed.zero import (
    StepMemoryProfiler,
    ZeroRedundancyOptimizer,
    model_state_bytes,
)
from spiral.distributed.zero_checkpoint import load_sharded, save_sharded
from spiral.optim import AdamW

__all__ = ["STRATEGIES", "run_rank", "train"]

STRATEGIES = ("dp", "tp", "pp", "zero1", "zero2", "zero3", "dp_tp")


def _rows(x: np.ndarray, rank: int, n: int) -> np.ndarray:
    if x.shape[0] % n:
        raise ValueError(f"global batch {x.shape[0]} is not divisible by {n} data-parallel ranks")
    b = x.shape[0] // n
    return x[rank * b:(rank + 1) * b]


def _mean_over(comm: Comm, value: float) -> float:
    buf = np.array([value], dtype=np.float64)
    comm.all_reduce(buf, op="metrics")
    return float(buf[0]) / comm.size


def run_rank(rank: int, world: int, spec: TrainSpec, parallel: str, start: int = 0,
             stop: int | None = None, save_dir: str | None = None,
             load_dir: str | None = None) -> dict[str, Any]:
    """One rank's run of steps ``start``..``stop``; returns its losses, its parameters (or
    pieces) and counters. ZeRO runs can resume from and save sharded checkpoints."""
    if parallel not in STRATEGIES:
        raise ValueError(f"parallel must be one of {STRATEGIES}, got {parallel!r}")
    batches = global_batches(spec)[start:stop]
    model = make_model(spec)
    comm = Comm()
    out: dict[str, Any] = {"rank": rank}
    losses: list[float] = []
    state: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    if parallel in ("dp", "dp_tp"):
        dp_comm, tp_comm = (comm, None) if parallel == "dp" else grid(world // spec.tp, spec.tp)
        if tp_comm is not None:
            parallelize_gpt(model, tp_comm)
        ddp = DistributedDataParallel(model, dp_comm, algorithm=spec.allreduce,
                                      bucket_cap_bytes=spec.bucket_cap_bytes)
        opt = make_optimizer(model, spec)
        for x, y in batches:
            opt.zero_grad()
            prof = StepMemoryProfiler()  # stage 11's profiler, this rank's step
            with prof:
                prof.track_states(list(model.parameters()), opt)
                loss = loss_fn(ddp, _rows(x, dp_comm.rank, dp_comm.size),
                               _rows(y, dp_comm.rank, dp_comm.size))
                loss.backward()
                ddp.finish_gradient_synchronization()
                prof.track_states(list(model.parameters()), opt)
                out["profiled"] = prof.live_by_tag()
                out["profiled_peak"] = dict(prof.timeline.peak_by_tag)
                out["memory"] = model_state_bytes(list(model.parameters()), opt)
            opt.step()
            losses.append(_mean_over(dp_comm, loss.item()))
        out["exposed_s"] = ddp.exposed_s
        out["dp_rank"], out["tp_rank"] = dp_comm.rank, (tp_comm.rank if tp_comm else 0)
        for c in (dp_comm, tp_comm):
            if c is not None and c is not comm:
                for k, v in c.sent.items():
                    comm.count(k, v)
        state = state_of(model)
    elif parallel == "tp":
        parallelize_gpt(model, comm)
        opt = make_optimizer(model, spec)
        for x, y in batches:
            opt.zero_grad()
            loss = loss_fn(model, x, y)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
        state = state_of(model)
    elif parallel == "pp":
        stage = PipelineStage(model, comm)
        params = stage.parameters()
        opt = AdamW([{"params": [p for p in params if p.ndim >= 2],
                      "weight_decay": spec.weight_decay},
                     {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                    lr=spec.lr, betas=spec.betas)
        for x, y in batches:
            opt.zero_grad()
            losses.append(stage.step(x, y, spec.schedule, spec.micro_batches))
            opt.step()
        state = {n: p.data.copy() for n, p in stage.named}
        out["events"] = np.array(stage.events)
        out["peak_in_flight"] = stage.peak_in_flight
        out["peak_live_bytes"] = stage.peak_live_bytes
    else:  # zero1 | zero2 | zero3
        zopt = ZeroRedundancyOptimizer(model, comm, int(parallel[-1]), lr=spec.lr,
                                       betas=spec.betas, weight_decay=spec.weight_decay,
                                       bucket_cap_bytes=spec.bucket_cap_bytes)
        if load_dir is not None:
            load_sharded(load_dir, zopt)
        for x, y in batches:
            zopt.zero_grad()
            prof = StepMemoryProfiler()
            with prof:
                prof.track_states(zopt.state_params(), zopt.inner)
                loss = loss_fn(model, _rows(x, rank, world), _rows(y, rank, world))
                loss.backward()
                prof.track_states(zopt.state_params(), zopt.inner)
                out["profiled"] = prof.live_by_tag()
                out["profiled_peak"] = dict(prof.timeline.peak_by_tag)
                out["memory"] = zopt.memory()
            zopt.step()
            losses.append(_mean_over(comm, loss.item()))
        state = {n: p.data.copy() for n, p in zopt.pieces.items()}
        if save_dir is not None:
            save_sharded(save_dir, zopt)
    out["wall_s"] = time.perf_counter() - t0
    out["losses"] = losses
    out["sent"] = dict(comm.sent)
    out["load_avg"] = list(os.getloadavg())
    out.update({f"state/{k}": v for k, v in state.items()})
    return out


def _merge(parallel: str, ranks: list[dict[str, Any]], spec: TrainSpec) -> dict[str, np.ndarray]:
    states = [{k[6:]: v for k, v in r.items() if k.startswith("state/")} for r in ranks]
    if parallel == "dp":
        return states[0]
    if parallel in ("tp", "dp_tp"):
        group = [s for r, s in zip(ranks, states) if r.get("dp_rank", 0) == 0]
        return unshard_state(group)
    if parallel == "pp":
        full: dict[str, np.ndarray] = {}
        for s in reversed(states):  # rank 0's embedding copy wins (both are equal)
            full.update(s)
        return full
    shapes = {n: p.data.shape for n, p in make_model(spec).named_parameters()}
    return {n: np.concatenate([s[n] for s in states]).reshape(shapes[n]) for n in shapes}


def train(spec: TrainSpec, nproc: int, parallel: str, *, start: int = 0,
          stop: int | None = None, save_dir: str | None = None, load_dir: str | None = None,
          timeout_s: float = 300.0, collective_timeout_s: float = 60.0,
          start_method: str = "fork") -> dict[str, Any]:
    """Run ``spec`` on ``nproc`` processes with strategy ``parallel``; merged results."""
    ranks = spawn(run_rank, nproc, spec, parallel, start, stop, save_dir, load_dir,
                  timeout_s=timeout_s, collective_timeout_s=collective_timeout_s,
                  start_method=start_method)
    last = ranks[-1] if parallel == "pp" else ranks[0]
    tokens = len(ranks[0]["losses"]) * spec.batch_size * spec.context_length
    wall = max(r["wall_s"] for r in ranks)
    return {"losses": last["losses"], "state": _merge(parallel, ranks, spec),
            "sent": [r["sent"] for r in ranks], "wall_s": wall, "tokens_per_s": tokens / wall,
            "load_avg": ranks[0]["load_avg"], "ranks": ranks}
