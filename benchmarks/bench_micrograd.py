"""Our scalar `Value` against micrograd (the PyPI package), training the same small MLP.

Run from the repository root::

    PYTHONPATH=src python -m benchmarks.bench_micrograd [--steps 3] [--repeats 5]

Both engines train micrograd's demo network, MLP(2, [16, 16, 1]), on the same 100 two-moons
points with micrograd's demo recipe (SVM max-margin loss, L2 penalty 1e-4, SGD with a
decaying learning rate). Our network starts from micrograd's initial weights, so the losses
must agree step for step; we require |Δloss| ≤ 1e-12 before any timing is trusted.

A third candidate isolates one design choice: ``ClosureValue`` is our engine with the
local backward stored as a closure per node (micrograd's design) instead of local derivative
numbers, everything else (``__slots__``, iterative sort, constants not wrapped) equal.

Python's garbage collector matters more than any of this for micrograd, whose closures form
reference cycles (node → closure → node) that the collector must trace, so we time every
engine three ways, the same on both sides: collector enabled (Python's default); disabled;
and disabled but with one ``gc.collect()`` at the end of the timed run. The last is the fair
form of "disabled": reference counting frees our graphs inside the timed region, while
micrograd's cyclic graphs are only reclaimed by the collector, which a plain "disabled"
timing leaves for later, outside the timer (and in a real training loop would leak).
Writes ``docs/results/benchmarks/micrograd/results.json``.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
from micrograd.nn import MLP as MicroMLP

from benchmarks.harness import compare, fmt_row, ratios, save
from spiral.autograd.value import MLP

N_POINTS, ALPHA = 100, 1e-4


def moons(n: int, rng: np.random.Generator) -> tuple[list[list[float]], list[float]]:
    """Two interleaving half circles with Gaussian noise; labels ±1."""
    half = n // 2
    t = np.pi * rng.random(n)
    upper = np.c_[np.cos(t[:half]), np.sin(t[:half])]  # (half, 2)
    lower = np.c_[1 - np.cos(t[half:]), 0.5 - np.sin(t[half:])]  # (n - half, 2)
    x = np.r_[upper, lower] + 0.1 * rng.standard_normal((n, 2))
    y = np.r_[np.ones(half), -np.ones(n - half)]
    return x.tolist(), y.tolist()


class ClosureValue:
    """Our engine with micrograd's closures: a new function object per node."""

    __slots__ = ("data", "grad", "_prev", "_backward")

    def __init__(self, data: float, _prev: tuple[ClosureValue, ...] = ()) -> None:
        self.data = data
        self.grad = 0.0
        self._prev = _prev
        self._backward: Callable[[], None] | None = None

    def __add__(self, other: Any) -> ClosureValue:
        if isinstance(other, ClosureValue):
            out = ClosureValue(self.data + other.data, (self, other))

            def backward() -> None:
                self.grad += out.grad
                other.grad += out.grad
        else:
            out = ClosureValue(self.data + other, (self,))

            def backward() -> None:
                self.grad += out.grad
        out._backward = backward
        return out

    __radd__ = __add__

    def __mul__(self, other: Any) -> ClosureValue:
        if isinstance(other, ClosureValue):
            out = ClosureValue(self.data * other.data, (self, other))

            def backward() -> None:
                self.grad += other.data * out.grad
                other.grad += self.data * out.grad
        else:
            out = ClosureValue(self.data * other, (self,))

            def backward() -> None:
                self.grad += other * out.grad
        out._backward = backward
        return out

    __rmul__ = __mul__

    def relu(self) -> ClosureValue:
        out = ClosureValue(self.data if self.data > 0 else 0.0, (self,))

        def backward() -> None:
            self.grad += (out.data > 0) * out.grad

        out._backward = backward
        return out

    def backward(self) -> None:
        order: list[ClosureValue] = []
        seen = {self}
        stack = [(self, iter(self._prev))]
        while stack:
            v, parents = stack[-1]
            for p in parents:
                if p not in seen:
                    seen.add(p)
                    if p._prev:
                        p.grad = 0.0
                        stack.append((p, iter(p._prev)))
                    break
            else:
                stack.pop()
                order.append(v)
        self.grad = 1.0
        for v in reversed(order):
            if v._backward is not None:
                v._backward()


class ClosureMLP(MLP):
    """`MLP` with `ClosureValue` parameters (same structure, same summation order)."""

    def __init__(self, weights: list[float]) -> None:
        super().__init__(2, [16, 16, 1])
        for layer in self.layers:
            for neuron in layer:
                neuron.w = [ClosureValue(0.0) for _ in neuron.w]  # type: ignore[misc]
                neuron.b = ClosureValue(0.0)  # type: ignore[assignment]
        set_weights(self, weights)


def set_weights(model: Any, weights: list[float]) -> None:
    for p, w in zip(model.parameters(), weights):
        p.data = w
        p.grad = 0.0


def train(model: Any, x: list[list[float]], y: list[float], steps: int) -> list[float]:
    """micrograd's demo recipe, full batch, written once for every engine."""
    params = model.parameters()
    losses = []
    for k in range(steps):
        scores = [model(xi) for xi in x]
        scores = [s[0] if isinstance(s, list) else s for s in scores]
        margins = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
        data_loss = sum(margins) * (1.0 / len(margins))
        reg_loss = ALPHA * sum(p * p for p in params)
        loss = data_loss + reg_loss
        for p in params:
            p.grad = 0.0
        loss.backward()
        lr = 1.0 - 0.9 * k / 100
        for p in params:
            p.data -= lr * p.grad
        losses.append(loss.data)
    return losses


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x, y = moons(N_POINTS, rng)
    random.seed(1337)  # micrograd draws its initial weights from the global `random`
    micro = MicroMLP(2, [16, 16, 1])
    init = [float(p.data) for p in micro.parameters()]
    ours, closure = MLP(2, [16, 16, 1]), ClosureMLP(init)

    def run(model: Any) -> Callable[[], list[float]]:
        def go() -> list[float]:
            set_weights(model, init)
            return train(model, x, y, args.steps)
        return go

    candidates = {"spiral Value": run(ours), "spiral ClosureValue": run(closure),
                  "micrograd": run(micro)}
    losses = {k: f() for k, f in candidates.items()}
    diff = max(abs(a - b) for k in losses for a, b in zip(losses[k], losses["micrograd"]))
    assert diff <= 1e-12, f"losses disagree by {diff}"
    assert all(math.isfinite(v) for v in losses["micrograd"])
    def then_collect(fn: Callable[[], list[float]]) -> Callable[[], None]:
        def go() -> None:
            fn()
            gc.collect()  # the cyclic garbage the run left behind, collected inside the timer
        return go

    with_cleanup = {k: then_collect(f) for k, f in candidates.items()}
    settings = (("gc_enabled", "GC enabled", candidates, False),
                ("gc_disabled", "GC disabled", candidates, True),
                ("gc_disabled_cleanup", "GC disabled + final collect", with_cleanup, True))
    rows, results = [], {}
    for key, setting, cands, gc_disabled in settings:
        rec = compare(cands, repeats=args.repeats, warmup=1, threads=1, gc_disabled=gc_disabled)
        r = ratios(rec, ours="spiral Value")
        for k, timing in rec["timings"].items():
            per_step = {t: v / args.steps for t, v in timing.items() if t != "all_s"}
            rows.append([setting, *fmt_row(k, per_step, None if k == "spiral Value" else r[k])])
        results[key] = {**rec, "speedup_vs_micrograd": r["micrograd"],
                        "speedup_vs_closures": r["spiral ClosureValue"]}
    results.update({
        "steps": args.steps, "n_points": N_POINTS, "architecture": "MLP(2, [16, 16, 1])",
        "losses": losses["micrograd"], "max_abs_loss_difference": diff,
        "n_parameters": len(init),
        "table": {"columns": ["garbage collector", "engine", "median ms / step",
                              "min–max ms", "micrograd-style time / ours"], "rows": rows},
    })
    path = save("micrograd", results)
    for row in rows:
        print(*row, sep="  |  ")
    print(f"max |Δloss| = {diff:.2e}; written {path}")
    return results


if __name__ == "__main__":
    main()
