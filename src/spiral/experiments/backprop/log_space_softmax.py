"""Naive vs log-space softmax: where the naive one fails, numerically (stage 3).

softmax(x)_i = exp(x_i) / Σ_j exp(x_j) computed as written overflows as soon as
max x > ln(float max) (88.72 in float32, 709.78 in float64): exp returns inf and inf/inf is
NaN. Subtracting the maximum first (softmax is shift-invariant) removes the overflow, but
log(softmax(x)) still underflows to −inf once x_i − max x drops below the log of half the
smallest subnormal (−103.97 in float32, −745.13 in float64). Working in log space,
log_softmax(x) = (x − m) − log Σ exp(x − m), is finite for every finite input, and so is the
fused cross-entropy built on it. The experiment locates each failure on a fine grid and
compares it with the threshold derived from the float format.
Chapter: stage 3, "Numerical stability: log-space softmax".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.nn.kernels import cross_entropy_forward, log_softmax_forward, softmax_forward

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Config:
    grid_step: float = 0.01
    grid_max: float = 1000.0
    n_classes: int = 16
    scales: tuple[float, ...] = tuple(float(s) for s in np.logspace(0, 4, 41))
    n_draws: int = 50


def naive_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


METHODS = {
    "naive softmax": naive_softmax,
    "stable softmax": softmax_forward,
    "log(naive softmax)": lambda x: np.log(naive_softmax(x)),
    "log(stable softmax)": lambda x: np.log(softmax_forward(x)),
    "log_softmax (log space)": log_softmax_forward,
}


def _first_failure(fn: Any, grid: np.ndarray, columns: tuple[float, float], dt: Any) -> Any:
    """Smallest t on the grid where fn of the logits t·columns has a non-finite entry."""
    x = (grid[:, None] * np.asarray(columns)).astype(dt)  # (n_grid, 2): one row per t
    bad = ~np.all(np.isfinite(fn(x)), axis=-1)
    return float(grid[np.argmax(bad)]) if bad.any() else None


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    thresholds: dict[str, Any] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    rows = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for name in DTYPES:
            dt = np.dtype(name)
            grid = np.arange(0.0, config.grid_max, config.grid_step)
            # overflow: logits (t, 0); underflow of log p: logits (0, -t)
            over = _first_failure(naive_softmax, grid, (1.0, 0.0), dt)
            under = _first_failure(METHODS["log(stable softmax)"], grid, (0.0, -1.0), dt)
            safe = _first_failure(log_softmax_forward, grid, (1.0, -1.0), dt)
            info = np.finfo(dt)
            theory_over = float(np.log(info.max))
            # exp(-t) rounds to zero once it is below half the smallest subnormal
            theory_under = float(np.log(2.0) - np.log(float(info.smallest_subnormal)))
            thresholds[name] = {"overflow_measured": over, "overflow_theory": theory_over,
                                "underflow_measured": under, "underflow_theory": theory_under,
                                "log_softmax_failure": safe}
            rows.append([name, f"{theory_over:.2f}", f"{over:.2f}", f"{-theory_under:.2f}",
                         f"{-under:.2f}", "none" if safe is None else f"{safe:.2f}"])
            thresholds[name]["grid"] = [0.0, config.grid_max, config.grid_step]
            # random logits at growing scale: fraction of non-finite outputs, per method
            z = rng.standard_normal((config.n_draws, config.n_classes))
            curves[name] = {m: [] for m in METHODS}
            ce_fail = 0
            for s in config.scales:
                x = (s * z).astype(dt)
                for m, fn in METHODS.items():
                    curves[name][m].append(float(np.mean(~np.isfinite(fn(x)))))
                t = rng.integers(0, config.n_classes, config.n_draws)
                loss, _ = cross_entropy_forward(x, t, reduction="none")
                ce_fail += int(np.sum(~np.isfinite(loss)))
            thresholds[name]["fused_cross_entropy_failures"] = ce_fail
    return {
        "thresholds": thresholds,
        "scales": list(config.scales),
        "nonfinite_fraction": curves,
        "table": {
            "columns": ["dtype", "ln(max float)", "naive softmax first NaN at max logit",
                        "ln(smallest subnormal / 2)", "log(softmax) first −inf at gap",
                        "log_softmax failures"],
            "rows": rows,
        },
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    fig, axes = new_figure(1, 2, width=8.0, height=3.2, sharey=True)
    s = results["scales"]
    for ax, name in zip(axes, DTYPES):
        for i, (m, frac) in enumerate(results["nonfinite_fraction"][name].items()):
            ax.semilogx(s, frac, color=PALETTE[i], label=m, drawstyle="steps-post",
                        lw=2.4 - 0.35 * i)
        ax.set_title(name)
        ax.set_xlabel("logit scale (std of x)")
    axes[0].set_ylabel("fraction of outputs NaN or ±inf")
    axes[1].legend(fontsize=7, loc="upper left")
    return {"naive_vs_log_space": fig}


def check(results: dict[str, Any]) -> None:
    for name in DTYPES:
        th = results["thresholds"][name]
        step = 0.011  # the grid step, plus rounding of the grid points
        # the naive softmax fails exactly where exp overflows, and not a grid step earlier
        assert abs(th["overflow_measured"] - th["overflow_theory"]) < step, th
        # log of a probability underflows once the gap exceeds -ln(smallest subnormal)
        assert abs(th["underflow_measured"] - th["underflow_theory"]) < step, th
        assert th["log_softmax_failure"] is None, th
        assert th["fused_cross_entropy_failures"] == 0, th
        curves = results["nonfinite_fraction"][name]
        assert curves["naive softmax"][-1] > 0  # at 1e4 the naive version is broken
        assert max(curves["log_softmax (log space)"]) == 0.0
        assert max(curves["stable softmax"]) == 0.0


EXPERIMENT = Experiment(
    name="backprop_log_space_softmax", stage=3, title="Naive vs log-space softmax",
    quick=Config(grid_max=800.0, scales=(1.0, 100.0, 1e4), n_draws=10), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{k} naive overflow at", v["overflow_measured"])
                       for k, v in r["thresholds"].items()],
    description="where naive softmax overflows and log(softmax) underflows, vs theory",
)
