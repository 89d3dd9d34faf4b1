"""Smoothing strength: cross-entropy against add-k's k and Kneser–Ney's discount D.

Too little smoothing overfits (unseen events cost a fortune), too much flattens every
distribution toward uniform; the optimum is found on the tune split and marked, and the
validation loss at that choice is reported once (with the validation optimum beside it, to
show how little the honest choice gives away). Chapter: stages/stage-01-ngrams
("Smoothing").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.ngram import corpora as nc
from spiral.ngram import NGramLM
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    cases: tuple[tuple[str, int], ...] = (("shakespeare", 3), ("shakespeare", 5), ("names", 3))
    k_grid: tuple[float, ...] = tuple(float(k) for k in np.logspace(-4, 1.5, 23))
    d_grid: tuple[float, ...] = tuple(float(d) for d in np.linspace(0.1, 1.0, 10))
    seeds: tuple[int, ...] = (42, 0, 1)
    max_chars: int | None = None


def _curves(c: nc.Corpus, order: int, config: Config) -> dict[str, Any]:
    full, part = NGramLM(order).fit(c.train), NGramLM(order).fit(c.fit)
    out: dict[str, Any] = {}
    for smoothing, grid in (("add_k", config.k_grid), ("kneser_ney", config.d_grid)):
        best, tune_curve = nc.tune(part, c.tune, smoothing, grid)
        val_curve = [full.with_smoothing(smoothing, k=v, discount=v).cross_entropy(c.val)
                     for v in grid]
        out[smoothing] = {
            "tune": tune_curve, "val": val_curve, "chosen": best,
            "val_at_chosen": val_curve[grid.index(best)],
            "val_optimum": float(grid[int(np.argmin(val_curve))]),
            "val_min": float(min(val_curve)),
        }
    out["laplace_val"] = full.with_smoothing("laplace").cross_entropy(c.val)
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    res: dict[str, Any] = {"k_grid": list(config.k_grid), "d_grid": list(config.d_grid),
                           "cases": []}
    rows = []
    for corpus, order in config.cases:
        runs = [_curves(nc.load(corpus, s, config.max_chars), order, config)
                for s in nc.seeds_for(corpus, config.seeds)]
        case: dict[str, Any] = {"corpus": corpus, "order": order,
                                "deterministic": corpus != "names"}
        for sm in ("add_k", "kneser_ney"):
            case[sm] = {
                "tune": np.mean([r[sm]["tune"] for r in runs], axis=0).tolist(),
                "val": np.mean([r[sm]["val"] for r in runs], axis=0).tolist(),
                "chosen": [r[sm]["chosen"] for r in runs],
                "val_at_chosen": mean_sd([r[sm]["val_at_chosen"] for r in runs]),
                "val_optimum": [r[sm]["val_optimum"] for r in runs],
                "val_min": mean_sd([r[sm]["val_min"] for r in runs]),
            }
        case["laplace_val"] = mean_sd([r["laplace_val"] for r in runs])
        res["cases"].append(case)
        res[f"{corpus}_{order}"] = case
        rows.append([corpus, order, f"{case['laplace_val']['mean']:.3f}",
                     f"{case['add_k']['chosen'][0]:.2g}",
                     f"{case['add_k']['val_at_chosen']['mean']:.3f}",
                     f"{case['add_k']['val_optimum'][0]:.2g}",
                     f"{case['kneser_ney']['chosen'][0]:.2g}",
                     f"{case['kneser_ney']['val_at_chosen']['mean']:.3f}"])
    res["table"] = {"columns": ["corpus", "order", "Laplace val", "k (tuned)", "add-k val",
                                "k (val optimum)", "D (tuned)", "Kneser–Ney val"],
                    "rows": rows}
    return res


def plot(results: dict[str, Any]) -> dict[str, Any]:
    cases = results["cases"]
    fig, axes = new_figure(2, len(cases), width=3.2 * len(cases), height=5.2)
    axes = np.asarray(axes).reshape(2, len(cases))
    for j, case in enumerate(cases):
        for i, (sm, grid, xlabel) in enumerate((
            ("add_k", results["k_grid"], "k (pseudo-count per token)"),
            ("kneser_ney", results["d_grid"], "discount D"),
        )):
            ax = axes[i, j]
            r = case[sm]
            ax.plot(grid, r["tune"], color=PALETTE[6], lw=1.0, label="tune")
            ax.plot(grid, r["val"], color=PALETTE[i], label="validation")
            chosen = r["chosen"][0]
            y = r["val"][grid.index(chosen)]
            ax.plot([chosen], [y], "o", color=PALETTE[1], ms=5)
            ax.annotate(f"tuned {chosen:.2g}", xy=(chosen, y), xytext=(4, 8),
                        textcoords="offset points", fontsize=7, color=PALETTE[1])
            if sm == "add_k":
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_title(f"{case['corpus']}, order {case['order']}", loc="left")
            if j == 0:
                ax.set_ylabel("nats per character")
                ax.legend(fontsize=7)
    return {"smoothing_sweep": fig}


def check(results: dict[str, Any]) -> None:
    for case in results["cases"]:
        val = case["add_k"]["val"]
        i = int(np.argmin(val))
        assert 0 < i < len(val) - 1, "add-k's validation optimum lies inside the k range"
        assert case["add_k"]["val_at_chosen"]["mean"] <= case["laplace_val"]["mean"] + 1e-9
        assert case["add_k"]["val_at_chosen"]["mean"] - case["add_k"]["val_min"]["mean"] < 0.05, \
            "the tune split's choice is close to the validation optimum"


EXPERIMENT = Experiment(
    name="ngram_smoothing_sweep",
    stage=1,
    title="Smoothing strength",
    quick=Config(cases=(("shakespeare", 3),), k_grid=(1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0),
                 d_grid=(0.5, 0.8, 1.0)),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [(f"{c['corpus']} n={c['order']} tuned k", c["add_k"]["chosen"][0])
                       for c in r["cases"]],
)
