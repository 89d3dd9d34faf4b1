"""Depth × width: validation and training loss of MLP language models on names.

Every point uses the same short recipe (steps, batch, learning rate), the same context
(n_context) and embedding size; only the number of hidden layers and their width change.
Chapter: stage 4 ("How big a network?").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.mlp.sweeps import fit, short_recipe
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    corpus: str = "names"
    depths: tuple[int, ...] = (1, 2, 3)
    widths: tuple[int, ...] = (32, 128, 384)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 600
    batch_size: int = 16


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    grid: dict[str, Any] = {}
    rows = []
    for depth in config.depths:
        for width in config.widths:
            vals, trains = [], []
            for seed in config.seeds:
                r = fit(config.corpus, seed, {"n_layers": depth, "d_hidden": width},
                        short_recipe(config.max_steps, config.batch_size))
                vals.append(r["val_nats"])
                trains.append(r["history"][-1]["train_loss"])
                n_params = r["config"]["n_parameters"]
            key = f"{depth}x{width}"
            grid[key] = {"depth": depth, "width": width, "parameters": n_params,
                         "val_nats": mean_sd(vals), "train_nats": mean_sd(trains)}
            rows.append([depth, width, n_params, f"{np.mean(trains):.3f}",
                         f"{grid[key]['val_nats']['mean']:.3f} ± {grid[key]['val_nats']['sd']:.3f}",
                         f"{np.mean(vals) - np.mean(trains):+.3f}"])
    best = min(grid, key=lambda k: grid[k]["val_nats"]["mean"])
    return {"grid": grid, "best": best, "best_val_nats": grid[best]["val_nats"],
            "table": {"columns": ["hidden layers", "width", "parameters", "train",
                                  "validation (mean ± sd)",
                                  "gap"], "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.6)
    grid = results["grid"]
    depths = sorted({g["depth"] for g in grid.values()})
    for color, d in zip(PALETTE, depths):
        pts = sorted((g["parameters"], g["val_nats"]["mean"], g["train_nats"]["mean"])
                     for g in grid.values() if g["depth"] == d)
        x = [p[0] for p in pts]
        ax.plot(x, [p[1] for p in pts], marker="o", ms=3, color=color)
        ax.plot(x, [p[2] for p in pts], ls="--", lw=1.0, color=color, alpha=0.7)
        # the 3-layer line passes just under the end of the 2-layer one: lift that label
        direct_label(ax, x, [p[1] for p in pts], f"{d} hidden layer{'s' if d > 1 else ''}",
                     color=color, dy=8 if d == 2 else 0)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_title("validation (solid) and training (dashed), same recipe", loc="left",
                 fontsize=9)
    return {"depth_width": fig}


def check(results: dict[str, Any]) -> None:
    grid = results["grid"]
    # capacity helps at fixed depth: the widest 1-layer net fits training text better
    # than the narrowest one
    one = sorted((g["width"], g["train_nats"]["mean"]) for g in grid.values() if g["depth"] == 1)
    assert one[-1][1] < one[0][1], one


EXPERIMENT = Experiment(
    name="mlp_depth_width", stage=4, title="Depth × width",
    quick=Config(depths=(1,), widths=(8, 128), seeds=(0,), max_steps=120, batch_size=8),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("best (layers x width)", r["best"]),
                       ("best val nats", r["best_val_nats"]["mean"])],
)
