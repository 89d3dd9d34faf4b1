"""Optimizer trajectories on 2-D loss surfaces: a narrow valley, Rosenbrock, a saddle.

Three surfaces that each isolate one difficulty of real loss landscapes:

    valley      f = ½ (u² + 100 v²), (u, v) = (x, y) rotated 30°   ill-conditioning (κ = 100)
    rosenbrock  f = (1 − x)² + 100 (y − x²)²          a curved, flat-bottomed valley
    saddle      f = x² − y² + y⁴ / 4                  a saddle at 0, minima at y = ±√2

and five optimizers from ``spiral.optim`` (SGD, SGD + momentum 0.9, Nesterov 0.9, RMSprop,
Adam). Each optimizer gets its own best learning rate per surface from a log-spaced grid
(fewest steps until f − f* stays below 10⁻³, ties broken by the final gap; diverging runs
excluded), so no method is handicapped by a learning rate tuned for another. The gradient
comes from our ``Tensor`` engine. We record the paths, the steps to the threshold and the final gap.
Chapter: stage 5, "Five optimizers on three surfaces".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment
from spiral.optim import SGD, Adam, RMSprop

_C, _S = math.cos(math.pi / 6), math.sin(math.pi / 6)


def valley(p: Tensor) -> Tensor:
    u = p[0] * _C + p[1] * _S                          # rotate by 30°: the valley is oblique
    v = p[1] * _C - p[0] * _S
    return 0.5 * (u * u + 100.0 * v * v)


def rosenbrock(p: Tensor) -> Tensor:
    a = 1.0 - p[0]
    b = p[1] - p[0] * p[0]
    return a * a + 100.0 * b * b


def saddle(p: Tensor) -> Tensor:
    y2 = p[1] * p[1]
    return p[0] * p[0] - y2 + 0.25 * y2 * y2


SURFACES: dict[str, dict[str, Any]] = {
    # minimum value, start, threshold for "reached", plot box
    "valley": {"f": valley, "fmin": 0.0, "start": (-4.0, 2.5), "tol": 1e-3,
               "box": (-5.0, 5.0, -3.5, 3.5)},
    "rosenbrock": {"f": rosenbrock, "fmin": 0.0, "start": (-1.2, 1.0), "tol": 1e-3,
                   "box": (-1.6, 1.6, -0.6, 1.6)},
    "saddle": {"f": saddle, "fmin": -1.0, "start": (1.5, 1e-3), "tol": 1e-3,
               "box": (-1.8, 1.8, -2.0, 2.0)},
}

OPTIMIZERS: dict[str, Callable[..., Any]] = {
    "SGD": lambda ps, lr: SGD(ps, lr=lr),
    "momentum": lambda ps, lr: SGD(ps, lr=lr, momentum=0.9),
    "Nesterov": lambda ps, lr: SGD(ps, lr=lr, momentum=0.9, nesterov=True),
    "RMSprop": lambda ps, lr: RMSprop(ps, lr=lr),
    "Adam": lambda ps, lr: Adam(ps, lr=lr),
}


@dataclass(frozen=True)
class Config:
    steps: int = 1000
    surfaces: tuple[str, ...] = ("valley", "rosenbrock", "saddle")
    lr_grid: tuple[float, ...] = tuple(float(x) for x in np.geomspace(1e-4, 1.0, 25))


def trajectory(surface: str, optimizer: str, lr: float, steps: int) -> dict[str, Any]:
    spec = SURFACES[surface]
    p = Tensor(np.array(spec["start"], dtype=np.float64), requires_grad=True)
    opt = OPTIMIZERS[optimizer]([p], lr)
    path, losses = [p.data.copy()], []
    for _ in range(steps):
        opt.zero_grad()
        loss = spec["f"](p)
        losses.append(float(loss.item()))
        if not math.isfinite(losses[-1]) or abs(losses[-1]) > 1e8:
            break
        loss.backward()
        opt.step()
        path.append(p.data.copy())
    gap = np.asarray(losses) - spec["fmin"]
    # settled: the first step from which the gap stays below tol until the end of the run
    above = np.flatnonzero(~(gap < spec["tol"]))
    settled = 0 if above.size == 0 else int(above[-1]) + 1
    return {"path": np.asarray(path).tolist(), "final_gap": float(gap[-1]),
            "steps_to_tol": settled if settled < len(gap) and len(losses) == steps else None,
            "diverged": len(losses) < steps}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"surfaces": {}}
    rows = []
    for surface in config.surfaces:
        out["surfaces"][surface] = {}
        for name in OPTIMIZERS:
            runs = [dict(trajectory(surface, name, lr, config.steps), lr=lr)
                    for lr in config.lr_grid]
            ok = [r for r in runs if not r["diverged"] and math.isfinite(r["final_gap"])]
            t = min(ok, key=lambda r: (r["steps_to_tol"] if r["steps_to_tol"] is not None
                                       else math.inf, r["final_gap"]))
            out["surfaces"][surface][name] = t
            reached = "—" if t["steps_to_tol"] is None else str(t["steps_to_tol"])
            rows.append([surface, name, f"{t['lr']:.3g}", reached, f"{t['final_gap']:.2e}"])
    out["table"] = {"columns": ["surface", "optimizer", "lr", "steps until f − f* stays < 1e-3",
                                f"f − f* after {config.steps} steps"], "rows": rows}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    fig, axes = new_figure(1, 3, width=12.0, height=4.0)
    for ax, (surface, runs) in zip(axes, results["surfaces"].items()):
        spec = SURFACES[surface]
        x0, x1, y0, y1 = spec["box"]
        xs, ys = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        grid = Tensor(np.stack([xs, ys]))
        z = spec["f"](grid).data - spec["fmin"]
        ax.contour(xs, ys, np.log10(z - z.min() + 1e-3), levels=18, colors="#bbbbbb",
                   linestyles="solid", linewidths=0.6)
        for i, (name, t) in enumerate(runs.items()):
            path = np.asarray(t["path"])
            ax.plot(path[:, 0], path[:, 1], color=PALETTE[i], lw=1.0, label=name)
            ax.plot(path[-1, 0], path[-1, 1], "o", color=PALETTE[i], ms=3)
        ax.plot(*spec["start"], "k^", ms=5)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(surface)
        ax.set_xlabel("θ₁")
    axes[0].set_ylabel("θ₂")
    axes[0].legend(loc="lower right", fontsize=7)
    return {"trajectories": fig}


def check(results: dict[str, Any]) -> None:
    s = results["surfaces"]
    steps = {k: (v["steps_to_tol"] or 10**9) for k, v in s["valley"].items()}
    # the valley: momentum and Nesterov settle in fewer steps than the best-tuned plain SGD
    assert steps["momentum"] < steps["SGD"] and steps["Nesterov"] < steps["SGD"], steps
    # Rosenbrock: plain SGD crawls along the curved valley floor; momentum and Adam get closer
    ros = {k: v["final_gap"] for k, v in s["rosenbrock"].items()}
    assert ros["momentum"] < ros["SGD"] and ros["Adam"] < ros["SGD"], ros
    assert s["rosenbrock"]["SGD"]["steps_to_tol"] is None   # SGD has not arrived
    # the saddle: started 10⁻³ off the ridge, every method escapes to a minimum
    assert all(v["steps_to_tol"] is not None for v in s["saddle"].values())
    assert not any(v["diverged"] for runs in s.values() for v in runs.values())


EXPERIMENT = Experiment(
    name="optim_trajectories_2d", stage=5, title="Optimizer paths on 2-D surfaces",
    quick=Config(steps=500, lr_grid=tuple(float(x) for x in np.geomspace(1e-3, 1.0, 8))),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{s}/{k}", v["steps_to_tol"]) for s, runs in r["surfaces"].items()
                       for k, v in runs.items()],
    description="SGD, momentum, Nesterov, RMSprop and Adam on a valley, Rosenbrock, a saddle",
)
