"""What the allocation hooks cost: nothing measurable when unused, a factor when profiling.

With no profiler attached, each tensor the engine creates pays one test of an empty list
(``if _HOOKS:``) and each backward node one more. We count the tensors and nodes of a step,
time that test alone (best of many), and compare n × t_test with the step's time; then we
time the same step with the profiler attached. Wall-clock on a shared machine is noisy:
the load average is recorded beside every timing, and only the ratio is claimed.
Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

import os
import time
import timeit
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import hooks
from spiral.experiments.framework import Experiment
from spiral.experiments.memory.common import batch
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.plotting import PALETTE, new_figure
from spiral.profiling.memory import MemoryProfiler


@dataclass(frozen=True)
class Config:
    B: int = 8
    T: int = 64
    repeats: int = 7


class _Count:
    def __init__(self) -> None:
        self.tensors = 0
        self.grad_calls = 0

    def __call__(self, event: str, nbytes: int, tensor_id: int) -> None:
        self.tensors += event == "alloc"

    def on_grads(self, node: Any, arrays: Any) -> None:
        self.grad_calls += 1


def _step(model: GPT, x: np.ndarray, y: np.ndarray) -> float:
    t0 = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    for p in model.parameters():
        p.grad = None
    return time.perf_counter() - t0


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    c = GPTConfig.preset("baby", 65)
    model = GPT(c, rng=np.random.default_rng(seed))
    x, y = batch(c, config.B, config.T, seed)
    _step(model, x, y)
    count = _Count()
    with hooks.register_allocation_hook(count):
        _step(model, x, y)
    plain = min(_step(model, x, y) for _ in range(config.repeats))
    profiled = []
    for _ in range(config.repeats):
        with MemoryProfiler():
            profiled.append(_step(model, x, y))
    empty: list[Any] = []
    n = 200_000
    t_test = min(timeit.repeat("if empty: pass", globals={"empty": empty}, number=n,
                               repeat=5)) / n
    checks = count.tensors + count.grad_calls
    return {"tensors_per_step": count.tensors, "grad_notifications": count.grad_calls,
            "step_seconds": plain, "profiled_seconds": min(profiled),
            "profiler_slowdown": min(profiled) / plain, "test_seconds": t_test,
            "unused_overhead_fraction": checks * t_test / plain,
            "loadavg": list(os.getloadavg())}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(1, 1, width=5.6, height=2.2)
    vals = [results["step_seconds"] * 1e3, results["profiled_seconds"] * 1e3]
    ax.barh(["no profiler", "profiler attached"], vals, color=[PALETTE[0], PALETTE[1]])
    ax.set_xlabel(f"forward + backward, best of repeats (ms); load average "
                  f"{results['loadavg'][0]:.1f}")
    return {"hook_overhead": fig}


def check(results: dict[str, Any]) -> None:
    assert results["unused_overhead_fraction"] < 1e-3, results["unused_overhead_fraction"]
    assert results["tensors_per_step"] > 0


EXPERIMENT = Experiment(
    name="memory_hook_overhead", stage=11, title="The cost of the allocation hooks",
    quick=Config(B=2, T=32, repeats=3), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("unused overhead", r["unused_overhead_fraction"]),
                       ("profiler slowdown", r["profiler_slowdown"])],
)
