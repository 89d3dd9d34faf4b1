"""Forward versus reverse mode: the cost of a full Jacobian as inputs n and outputs m vary.

For f: ℝⁿ → ℝᵐ, forward mode builds the Jacobian one column per pass (n passes of J·eⱼ),
reverse mode one row per backward pass (m passes of eᵢᵀJ) after one recorded evaluation.
The theory (Griewank & Walther 2008, ch. 3-4) predicts

    cost_forward(J) ≈ c_F · n · cost(f),      cost_reverse(J) ≈ c_R · m · cost(f),

with small constants c_F, c_R (≤ 3 for our primitive ops). We measure both as *operation
counts* (primal operations + derivative multiply-adds, counted exactly) and as *wall time*,
divided by the cost of evaluating f once (for time: one evaluation on dual numbers), on small
tanh networks written with scalar `Dual` and `Value` numbers. Three sweeps: n inputs with one
output; m outputs that all read one shared trunk; m outputs with a readout each, where
a backward pass touches only its own output's cone and O(m) turns out to be a loose bound.
Chapter: stage 2, "Forward or reverse?".
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd.forward import Dual, jacobian_forward, jacobian_reverse, jvp, primal_cost
from spiral.autograd.value import Value
from spiral.experiments.framework import Experiment, mean_sd


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    hidden: int = 16
    repeats: int = 7
    seeds: tuple[int, ...] = (0, 1, 2)


def network(
    n: int, m: int, hidden: int, rng: np.random.Generator, *, depth: int = 1,
    shared: bool = False,
) -> Callable[[list[Any]], list[Any]]:
    """A tanh network ℝⁿ → ℝᵐ as a scalar program that runs on Dual and Value alike.

    ``depth`` tanh layers of width ``hidden`` (the trunk) feed the outputs. With
    ``shared=False`` each output is a dense readout yᵢ = Σⱼ Vᵢⱼhⱼ, so most of the work is in
    the m readouts; with ``shared=True`` each output is one cheap scaling yᵢ = vᵢ·Σⱼhⱼ, so
    nearly all the work is in the trunk and every output depends on all of it.
    """
    sizes = [n] + [hidden] * depth
    ws = [(rng.standard_normal((b, a)) / np.sqrt(a)).tolist()  # (fan_out, fan_in)
          for a, b in zip(sizes[:-1], sizes[1:])]
    readout = (rng.standard_normal((m, hidden)) / np.sqrt(hidden)).tolist()  # (m, hidden)

    def dot(ws: Sequence[float], xs: Sequence[Any]) -> Any:
        acc = xs[0] * ws[0]
        for w, x in zip(ws[1:], xs[1:]):
            acc = acc + x * w
        return acc

    def f(x: list[Any]) -> list[Any]:
        h = x
        for w in ws:
            h = [dot(row, h).tanh() for row in w]
        if shared:  # every output reads the whole trunk through s = Σⱼ hⱼ
            total = h[0]
            for hj in h[1:]:
                total = total + hj
            return [total * row[0] for row in readout]
        return [dot(row, h) for row in readout]

    return f


def _time(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` runs of ``fn``, garbage collector paused. On a shared machine
    the scheduler preempts a process for milliseconds at a time, so the minimum, not the
    median, estimates the work itself; the paused collector keeps its full collections
    (which scale with every live object) out of the op-count comparison."""
    ts = []
    for _ in range(repeats):
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return min(ts)


def pass_times(f: Callable[[list[Any]], list[Any]], x: list[float], repeats: int
               ) -> tuple[float, float]:
    """Seconds for the whole Jacobian by each mode, timed pass by pass and summed.

    Forward: n JVP passes. Reverse: one recorded evaluation plus m backward passes. Each
    pass takes well under the scheduler's time slice, so its fastest repeat is clean; timing
    a whole 100 ms Jacobian at once on a shared machine would time the neighbours instead.
    """
    n = len(x)
    forward = 0.0
    for j in range(n):
        basis = [1.0 if i == j else 0.0 for i in range(n)]
        forward += _time(lambda b=basis: jvp(f, x, b), repeats)  # type: ignore[misc]
    reverse = _time(lambda: f([Value(v) for v in x]), repeats)
    for y in f([Value(v) for v in x]):
        if isinstance(y, Value):
            reverse += _time(y.backward, repeats)
    return forward, reverse


def measure(
    n: int, m: int, config: Config, rng: np.random.Generator, **kw: Any
) -> dict[str, float]:
    """Op counts and times of both Jacobians, each divided by the cost of one evaluation."""
    f = network(n, m, config.hidden, rng, **kw)
    x = rng.standard_normal(n).tolist()
    p = primal_cost(f, x)
    j_fwd, c_fwd = jacobian_forward(f, x)
    j_rev, c_rev = jacobian_reverse(f, x)
    agree = float(np.max(np.abs(np.array(j_fwd) - np.array(j_rev))))
    t_f = _time(lambda: f([Dual(v) for v in x]), config.repeats)
    t_fwd, t_rev = pass_times(f, x, config.repeats)
    return {
        "n": n, "m": m, "cost_f": p,
        "ops_forward": c_fwd.total / p, "ops_reverse": c_rev.total / p,
        "time_forward": t_fwd / t_f, "time_reverse": t_rev / t_f,
        "max_disagreement": agree,
    }


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y on log x: 1 means linear growth, 0 means constant."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """ys ≈ a + b·xs by least squares, with the coefficient of determination R²."""
    b, a = np.polyfit(xs, ys, 1)
    pred = a + b * np.asarray(xs)
    ss_res = float(np.sum((np.asarray(ys) - pred) ** 2))
    ss_tot = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2))
    return {"a": float(a), "b": float(b), "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    sweeps: dict[str, list[list[dict[str, float]]]] = {
        "inputs": [], "outputs": [], "outputs_readout": []}
    for seed in config.seeds:
        r = np.random.default_rng([seed, int(rng.integers(1 << 31))])
        sweeps["inputs"].append([measure(n, 1, config, r, depth=2) for n in config.sizes])
        sweeps["outputs"].append(
            [measure(1, m, config, r, depth=2, shared=True) for m in config.sizes])
        sweeps["outputs_readout"].append([measure(1, m, config, r) for m in config.sizes])
    out: dict[str, Any] = {"sizes": list(config.sizes)}
    for sweep, runs in sweeps.items():
        var = "n" if sweep == "inputs" else "m"
        res: dict[str, Any] = {}
        for key in ("ops_forward", "ops_reverse", "time_forward", "time_reverse"):
            per_seed = [[row[key] for row in rs] for rs in runs]
            res[key] = np.median(np.array(per_seed), axis=0).tolist()
            res[f"slope_{key}"] = mean_sd([_slope(config.sizes, s) for s in per_seed])
            res[f"fit_{key}"] = _linear_fit(config.sizes, res[key])
        res["cost_f"] = [row["cost_f"] for row in runs[0]]
        res["max_disagreement"] = max(row["max_disagreement"] for rs in runs for row in rs)
        res["table"] = {
            "columns": [var, "cost(f) ops", "forward ops / cost(f)", "reverse ops / cost(f)",
                        "forward time / time(f)", "reverse time / time(f)"],
            "rows": [[s, c, round(a, 2), round(b, 2), round(t1, 1), round(t2, 1)]
                     for s, c, a, b, t1, t2 in zip(config.sizes, res["cost_f"],
                                                   res["ops_forward"], res["ops_reverse"],
                                                   res["time_forward"], res["time_reverse"])],
        }
        out[sweep] = res
    big = len(config.sizes) - 1
    out["ops_ratio_at_largest_n"] = out["inputs"]["ops_forward"][big] / out["inputs"][
        "ops_reverse"][big]
    out["time_ratio_at_largest_n"] = out["inputs"]["time_forward"][big] / out["inputs"][
        "time_reverse"][big]
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    sizes = results["sizes"]
    panels = (("inputs", "n inputs (m = 1)", "n inputs: forward pays n times"),
              ("outputs", "m outputs (n = 1), shared trunk", "m outputs: reverse pays m times"),
              ("outputs_readout", "m outputs (n = 1), own readouts",
               "own readouts: reverse stays cheap"))
    fig, axes = new_figure(2, 3, width=9.6, height=5.6, sharex=True)
    for col, (sweep, xlabel, title) in enumerate(panels):
        for row, (kind, unit) in enumerate((("ops", "operations"), ("time", "time"))):
            ax = axes[row][col]
            ax.plot(sizes, sizes, ":", color="#999999", lw=1)  # the O(size) prediction, slope 1
            if col == row == 0:
                direct_label(ax, sizes, sizes, "slope 1", color="#999999")
            for mode, color in (("forward", PALETTE[0]), ("reverse", PALETTE[1])):
                ys = results[sweep][f"{kind}_{mode}"]
                ax.plot(sizes, ys, "o-", color=color, ms=3)
                direct_label(ax, sizes, ys, mode, color=color)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            if row == 0:
                ax.set_title(title, loc="left", fontsize=9)
            else:
                ax.set_xlabel(xlabel)
            if col == 0:
                ax.set_ylabel(f"Jacobian {unit} / one evaluation")
    return {"modes_cost": fig}


def check(results: dict[str, Any]) -> None:
    for sweep in ("inputs", "outputs", "outputs_readout"):
        assert results[sweep]["max_disagreement"] < 1e-12  # both modes give the same J
    # n inputs, one output: forward mode's cost grows linearly in n, c_F·n with c_F ≤ 3 ...
    fit = results["inputs"]["fit_ops_forward"]
    assert fit["r2"] > 0.99 and 1.0 <= fit["b"] <= 3.0, fit
    # ... while reverse mode's stays within a constant of one evaluation, whatever n is
    rev = results["inputs"]["ops_reverse"]
    assert max(rev) / min(rev) < 1.5 and max(rev) <= 3.0, rev
    # one input, m outputs that all read a shared trunk: the mirror image
    fit = results["outputs"]["fit_ops_reverse"]
    assert fit["r2"] > 0.99 and 0.5 <= fit["b"] <= 3.0, fit
    fwd = results["outputs"]["ops_forward"]
    assert max(fwd) / min(fwd) < 1.5 and max(fwd) <= 3.0, fwd
    # when each output has its own readout, a backward pass visits only that output's cone,
    # so reverse mode stays cheap even for many outputs: O(m) is an upper bound
    assert max(results["outputs_readout"]["ops_reverse"]) <= 4.0


EXPERIMENT = Experiment(
    name="autodiff_modes", stage=2, title="Forward vs reverse mode: Jacobian cost as n and m vary",
    quick=Config(sizes=(1, 4, 16, 64), hidden=8, repeats=1, seeds=(0,)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [
        ("forward ops / cost(f) per input", round(r["inputs"]["fit_ops_forward"]["b"], 3)),
        ("reverse ops / cost(f) per output", round(r["outputs"]["fit_ops_reverse"]["b"], 3)),
        ("forward/reverse ops at largest n", round(r["ops_ratio_at_largest_n"], 1)),
        ("forward/reverse time at largest n", round(r["time_ratio_at_largest_n"], 1)),
    ],
)
