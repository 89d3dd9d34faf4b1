"""Learning-rate sensitivity: held-out loss against learning rate for each optimizer.

The learning rate is the one hyperparameter no optimizer removes. We train the same tiny
character MLP on names (``optim_tiny_lm``) for a fixed number of minibatch steps with SGD,
SGD + momentum 0.9, RMSprop and Adam at log-spaced learning rates (same initialisation
and batches for every run of a seed), and score each on the held-out tune split. The curve
is a valley: too small and the budget runs out, too large and training diverges. We
report each optimizer's best learning rate and the *width* of its good range — the span,
in decades, of learning rates whose loss is within 0.1 nats of that optimizer's best (the
crossings of that level, by linear interpolation of loss against log₁₀ lr between grid
points; a diverged grid point counts as an infinite loss).
Chapter: stage 5, "The learning rate".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.optimization.tiny_lm import TinyLM, train
from spiral.optim import SGD, Adam, RMSprop

OPTIMIZERS = {
    "SGD": lambda ps, lr: SGD(ps, lr=lr),
    "momentum": lambda ps, lr: SGD(ps, lr=lr, momentum=0.9),
    "RMSprop": lambda ps, lr: RMSprop(ps, lr=lr),
    "Adam": lambda ps, lr: Adam(ps, lr=lr),
}


@dataclass(frozen=True)
class Config:
    steps: int = 1000
    lr_grid: tuple[float, ...] = tuple(float(x) for x in np.geomspace(1e-4, 10.0, 11))
    optimizers: tuple[str, ...] = ("SGD", "momentum", "RMSprop", "Adam")
    seeds: tuple[int, ...] = (0, 1, 2)
    good_within: float = 0.1      # nats above the optimizer's best that still count as good
    model: TinyLM = TinyLM()


def good_range(lrs: list[float], losses: np.ndarray, level: float) -> tuple[float, float]:
    """The interval of lr (interpolated in log lr) around the best point with loss ≤ level."""
    x = np.log10(np.asarray(lrs))
    best = int(np.argmin(losses))

    def crossing(j_in: int, j_out: int) -> float:
        if not np.isfinite(losses[j_out]):
            return float(x[j_in] + 0.5 * (x[j_out] - x[j_in]))   # diverged: halfway, no more
        f = (level - losses[j_in]) / (losses[j_out] - losses[j_in])
        return float(x[j_in] + f * (x[j_out] - x[j_in]))

    lo = best
    while lo > 0 and losses[lo - 1] <= level:
        lo -= 1
    hi = best
    while hi < len(x) - 1 and losses[hi + 1] <= level:
        hi += 1
    left = crossing(lo, lo - 1) if lo > 0 else float(x[0])
    right = crossing(hi, hi + 1) if hi < len(x) - 1 else float(x[-1])
    return 10**left, 10**right


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"lr_grid": list(config.lr_grid), "curves": {}, "best": {},
                           "width_decades": {}, "best_lr": {}}
    rows = []
    for name in config.optimizers:
        losses = np.empty((len(config.seeds), len(config.lr_grid)))
        for i, seed in enumerate(config.seeds):
            for j, lr in enumerate(config.lr_grid):
                r = train(config.model, partial(OPTIMIZERS[name], lr=lr), config.steps,
                          np.random.default_rng(seed))
                losses[i, j] = r["tune_loss"] if not r["diverged"] else math.inf
        mean = losses.mean(axis=0)                      # inf where any seed diverged
        best = int(np.argmin(mean))
        lo, hi = good_range(list(config.lr_grid), mean, mean[best] + config.good_within)
        width = math.log10(hi / lo)
        out["curves"][name] = [float(m) for m in mean]
        out["best"][name] = mean_sd(losses[:, best])
        out["best_lr"][name] = config.lr_grid[best]
        out["width_decades"][name] = float(width)
        sd = losses[:, best].std(ddof=1) if len(config.seeds) > 1 else 0.0
        rows.append([name, f"{config.lr_grid[best]:.3g}", f"{mean[best]:.3f} ± {sd:.3f}",
                     f"{lo:.2g} – {hi:.2g}",
                     f"{width:.1f}"])
    out["table"] = {"columns": ["optimizer", "best lr", "tune loss at best lr (nats)",
                                f"good range (≤ best + {config.good_within})",
                                "width (decades)"], "rows": rows}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    fig, ax = new_figure(width=6.4, height=3.8)
    lrs = np.asarray(results["lr_grid"])
    top = 0.0
    for i, (name, curve) in enumerate(results["curves"].items()):
        y = np.asarray([float(c) for c in curve])       # JSON stores a divergence as "inf"
        finite = np.isfinite(y)
        ax.semilogx(lrs[finite], y[finite], "o-", color=PALETTE[i], ms=3)
        top = max(top, float(y[finite].max()))
        direct_label(ax, lrs[finite].tolist(), y[finite].tolist(), name, color=PALETTE[i])
        bad = ~finite
        if bad.any():
            ax.plot(lrs[bad], np.full(bad.sum(), top + 0.05), "x", color=PALETTE[i], ms=4)
    ax.set_xlabel("learning rate (log scale); × = diverged")
    ax.set_ylabel("held-out loss after training (nats)")
    ax.set_title("Loss against learning rate, tiny MLP on names")
    return {"lr_sensitivity": fig}


def check(results: dict[str, Any]) -> None:
    grid = results["lr_grid"]
    for name, raw in results["curves"].items():
        curve = [float(c) for c in raw]                 # JSON stores a divergence as "inf"
        best = int(np.argmin(curve))
        # a valley: the best lr is inside the grid, and both ends are clearly worse
        assert 0 < best < len(grid) - 1, (name, curve)
        assert curve[0] > curve[best] + 0.1 and curve[-1] > curve[best] + 0.1, (name, curve)
    # the sign-like steps of the adaptive methods: their best lr is far below SGD's
    assert results["best_lr"]["Adam"] < results["best_lr"]["SGD"] / 10, results["best_lr"]
    # no optimizer removes the learning rate: every good range is under two decades wide
    assert all(0 < w < 2.0 for w in results["width_decades"].values()), results["width_decades"]


EXPERIMENT = Experiment(
    name="optim_lr_sensitivity", stage=5, title="Loss against learning rate",
    quick=Config(steps=250, seeds=(0,), optimizers=("SGD", "Adam"),
                 lr_grid=tuple(float(x) for x in np.geomspace(1e-4, 10.0, 6))),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"best lr {r['best_lr'][k]:.3g}, width {r['width_decades'][k]:.1f}")
                       for k in r["best_lr"]],
    description="held-out loss after a fixed budget against learning rate, per optimizer",
)
