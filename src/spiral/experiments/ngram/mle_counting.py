"""MLE is counting, shown numerically: gradient descent on free logits finds the count ratios.

A bigram model with one free logit per (previous, next) pair, P = softmax(Z[prev]), trained
by plain gradient descent on the mean negative log-likelihood of the names training split,
converges to the closed-form maximum-likelihood estimate C[prev, next] / C[prev]: the loss
approaches the counting model's, and the largest probability gap shrinks toward zero.
Also reproduces makemore's published bigram anchor (all 32,033 names, train = eval).
Chapter: stages/stage-01-ngrams ("Maximum likelihood is counting").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral import data
from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.ngram import corpora as nc
from spiral.ngram import NGramLM
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    steps: int = 20_000
    lr: float = 50.0
    seeds: tuple[int, ...] = (0, 1, 2)  # initialisations of the logits, N(0, 1)
    n_records: int = 40


def _bigram_counts(lm: NGramLM) -> np.ndarray:
    V = lm.vocab_size
    C = np.zeros((V, V))  # (prev, next)
    t = lm.raw[1]
    C[t.codes // V, t.codes % V] = t.counts
    return C


def descend(C: np.ndarray, config: Config, rng: np.random.Generator) -> dict[str, Any]:
    """Gradient descent on Z (V, V): grad of -(1/N) sum C log softmax(Z) is (r P - C) / N."""
    N, r = C.sum(), C.sum(1, keepdims=True)  # r: (V, 1) row totals
    P_star = np.divide(C, r, out=np.zeros_like(C), where=r > 0)
    seen = r[:, 0] > 0
    Z = rng.standard_normal(C.shape)
    rec_at = set(np.unique(np.geomspace(1, config.steps, config.n_records).astype(int)))
    steps, loss, gap = [], [], []
    for step in range(1, config.steps + 1):
        Z -= Z.max(1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(1, keepdims=True)  # (V, V) rows are next-token distributions
        if step in rec_at or step == 1:
            steps.append(step)
            loss.append(float(-(C * np.log(P)).sum() / N))
            gap.append(float(np.abs(P - P_star)[seen].max()))
        Z -= config.lr * (r * P - C) / N
    return {"steps": steps, "loss": loss, "max_gap": gap}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = nc.load("names")
    lm = NGramLM(2).fit(c.train)
    C = _bigram_counts(lm)
    count_loss = lm.cross_entropy(c.train)
    runs = [descend(C, config, np.random.default_rng(s)) for s in config.seeds]
    everyone = data.parse_names(data.load_text("names"))
    res: dict[str, Any] = {
        "count_loss": count_loss,
        "steps": runs[0]["steps"],
        "loss": np.mean([r["loss"] for r in runs], axis=0).tolist(),
        "max_gap": np.mean([r["max_gap"] for r in runs], axis=0).tolist(),
        "final_loss": mean_sd([r["loss"][-1] for r in runs]),
        "final_excess": mean_sd([r["loss"][-1] - count_loss for r in runs]),
        "final_max_gap": mean_sd([r["max_gap"][-1] for r in runs]),
        "zero_cells": int((C == 0).sum()),
        "makemore_anchor": {
            "n_names": len(everyone),
            "mle_nll": NGramLM(2).fit(everyone).cross_entropy(everyone),
            "laplace_nll": NGramLM(2, "laplace").fit(everyone).cross_entropy(everyone),
            "note": "train = eval, all names, as in makemore's lecture",
        },
        "honest_split": {
            "laplace_val": NGramLM(2, "laplace").fit(c.train).cross_entropy(c.val),
            "mle_val": lm.cross_entropy(c.val),
            "kn_val": NGramLM(2, "kneser_ney").fit(c.train).cross_entropy(c.val),
        },
    }
    return res


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 2, width=8.0, height=3.2)
    steps = results["steps"]
    axes[0].plot(steps, results["loss"], color=PALETTE[0])
    axes[0].axhline(results["count_loss"], color=PALETTE[1], lw=1.0, ls="--")
    axes[0].annotate("counting (closed form)", xy=(steps[-1], results["count_loss"]),
                     xytext=(0, 6), textcoords="offset points", ha="right", fontsize=7,
                     color=PALETTE[1])
    direct_label(axes[0], steps, results["loss"], "gradient descent", color=PALETTE[0])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("gradient step")
    axes[0].set_ylabel("training NLL (nats per character)")
    axes[0].set_title("loss approaches the counting optimum", loc="left")
    axes[1].plot(steps, results["max_gap"], color=PALETTE[2])
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("gradient step")
    axes[1].set_ylabel("max |P − C / row total|")
    axes[1].set_title("probabilities approach the count ratios", loc="left")
    return {"mle_counting": fig}


def check(results: dict[str, Any]) -> None:
    assert results["final_excess"]["mean"] < 0.01, "gradient descent reaches the counting loss"
    assert results["max_gap"][-1] < results["max_gap"][0] / 5
    assert all(b <= a + 1e-12 for a, b in zip(results["loss"], results["loss"][1:]))
    a = results["makemore_anchor"]
    assert abs(a["mle_nll"] - 2.454) < 5e-4 and abs(a["laplace_nll"] - 2.4546) < 5e-5


EXPERIMENT = Experiment(
    name="mle_counting",
    stage=1,
    title="Maximum likelihood is counting",
    quick=Config(steps=1_500, seeds=(0,), n_records=10),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [("excess loss after GD", f"{r['final_excess']['mean']:.2e}"),
                       ("makemore anchor (train = eval)",
                        f"{r['makemore_anchor']['mle_nll']:.4f}")],
)
