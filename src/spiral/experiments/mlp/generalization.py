"""Training and validation curves, and the generalization gap, on names.

Three models, same recipe, periodic evaluation by the shared evaluator: a small network,
a large one without weight decay, and the same large one with weight decay and dropout. The
gap (validation − training loss) grows with capacity per training token; regularization
trades a little training loss for validation loss. Chapter: stage 4 ("Generalization").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.mlp.sweeps import fit, short_recipe
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    corpus: str = "names"
    small: tuple[int, int] = (1, 64)      # (hidden layers, width)
    large: tuple[int, int] = (2, 256)
    max_steps: int = 2000
    batch_size: int = 16
    eval_interval: int = 100
    eval_tokens: int = 20_000
    weight_decay: float = 0.1
    dropout: float = 0.2
    seed: int = 0


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    variants = {
        "small": (config.small, 0.0, 0.0),
        "large": (config.large, 0.0, 0.0),
        "large_regularized": (config.large, config.weight_decay, config.dropout),
    }
    out: dict[str, Any] = {}
    rows = []
    for name, ((depth, width), wd, p) in variants.items():
        r = fit(config.corpus, config.seed,
                {"n_layers": depth, "d_hidden": width, "dropout": p},
                short_recipe(config.max_steps, config.batch_size,
                             eval_interval=config.eval_interval, weight_decay=wd,
                             eval_tokens=config.eval_tokens))
        h = r["history"]
        n_params = r["config"]["n_parameters"]
        # the last record is the full validation split; the gap uses it
        gap = h[-1]["val_loss"] - h[-1]["train_loss"]
        best = min(x["val_loss"] for x in h)
        out[name] = {"depth": depth, "width": width, "weight_decay": wd, "dropout": p,
                     "parameters": n_params, "steps": [x["step"] for x in h],
                     "train": [x["train_loss"] for x in h], "val": [x["val_loss"] for x in h],
                     "final_val": h[-1]["val_loss"], "final_train": h[-1]["train_loss"],
                     "gap": gap, "best_periodic_val": best}
        rows.append([name.replace("_", " "), n_params, f"{wd:g}", f"{p:g}",
                     f"{h[-1]['train_loss']:.3f}", f"{h[-1]['val_loss']:.3f}", f"{gap:+.3f}"])
    return {"runs": out, "table": {"columns": ["model", "parameters", "weight decay", "dropout",
                                               "train", "validation", "gap"], "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    runs = results["runs"]
    fig, axes = new_figure(1, len(runs), width=3.2 * len(runs), height=3.2, sharey=True)
    for ax, (name, r) in zip(np.atleast_1d(axes), runs.items()):
        close = abs(r["train"][-1] - r["val"][-1]) < 0.03  # keep the two labels apart
        up = 5 if r["train"][-1] > r["val"][-1] else -5
        ax.plot(r["steps"], r["train"], color=PALETTE[0], lw=1.2)
        direct_label(ax, r["steps"], r["train"], "train", color=PALETTE[0],
                     dy=up if close else 0)
        ax.plot(r["steps"], r["val"], color=PALETTE[1], lw=1.2)
        direct_label(ax, r["steps"], r["val"], "val", color=PALETTE[1], dy=-up if close else 0)
        ax.set_title(f"{name.replace('_', ' ')} ({r['parameters']:,} params)", loc="left",
                     fontsize=9)
        ax.set_xlabel("optimizer step")
    np.atleast_1d(axes)[0].set_ylabel("cross-entropy (nats per character)")
    return {"curves": fig}


def check(results: dict[str, Any]) -> None:
    r = results["runs"]
    # more capacity per training token -> a larger generalization gap
    assert r["large"]["gap"] > r["small"]["gap"], (r["large"]["gap"], r["small"]["gap"])
    # and regularization shrinks it
    assert r["large_regularized"]["gap"] < r["large"]["gap"]


EXPERIMENT = Experiment(
    name="mlp_generalization", stage=4, title="Train/validation curves and the gap",
    quick=Config(small=(1, 8), large=(1, 256), max_steps=150, batch_size=8, eval_interval=50,
                 eval_tokens=5000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{k} gap", v["gap"]) for k, v in r["runs"].items()],
)
