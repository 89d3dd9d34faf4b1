"""The compute-optimal planner on the published Chinchilla laws, and what "20 tokens per
parameter" really rests on.

For each published parameter set of L(N, D) = E + A/N^α + B/D^β — Hoffmann et al. (2022)
Approach 3 and Besiroglu et al. (2024)'s refit of the same data — the planner
(:func:`spiral.scaling.compute_optimal`) gives the allocation exponents a = β/(α+β),
b = α/(α+β) and, at a ladder of budgets from 10¹⁵ to 10²⁵ FLOPs (Chinchilla's own run was
5.76·10²³), the optimal N*, D*, tokens per parameter and loss. A brute-force search along the
iso-FLOP curve D = C/(6N) checks each plan. Nothing here is trained: this is the algebra
of the chapter's derivation evaluated on published numbers. Chapter: stage 14,
"Compute-optimal allocation".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    budgets: tuple[float, ...] = (1e15, 1e17, 1e19, 1e21, 5.76e23, 1e25)
    grid_points: int = 4001


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.scaling import (
        CHINCHILLA,
        CHINCHILLA_COMPUTE,
        CHINCHILLA_REFIT,
        allocation_exponents,
        compute_optimal,
    )

    laws = {"hoffmann": CHINCHILLA, "besiroglu": CHINCHILLA_REFIT}
    out: dict[str, Any] = {"laws": laws, "chinchilla_compute": CHINCHILLA_COMPUTE}
    rows = []
    for key, law in laws.items():
        a, b = allocation_exponents(law)
        plans = []
        for C in config.budgets:
            p = compute_optimal(C, law)
            # brute force along the iso-FLOP curve
            n = np.logspace(np.log10(p.n_params) - 2, np.log10(p.n_params) + 2,
                            config.grid_points)
            d = C / (6 * n)
            loss = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
            n_brute = float(n[np.argmin(loss)])
            plans.append({"compute": C, "n": p.n_params, "tokens": p.tokens,
                          "tokens_per_parameter": p.tokens_per_parameter, "loss": p.loss,
                          "n_brute_rel_error": abs(n_brute - p.n_params) / p.n_params})
            rows.append([key, f"{C:.2e}", f"{p.n_params:.3g}", f"{p.tokens:.3g}",
                         f"{p.tokens_per_parameter:.1f}", f"{p.loss:.3f}"])
        at = compute_optimal(CHINCHILLA_COMPUTE, law)
        out[key] = {"a": a, "b": b, "plans": plans,
                    "at_chinchilla": {"n": at.n_params, "tokens": at.tokens,
                                      "tokens_per_parameter": at.tokens_per_parameter,
                                      "loss": at.loss}}
    out["table"] = {"columns": ["law", "compute C (FLOPs)", "N*", "D* (tokens)",
                                "tokens per parameter", "predicted loss"], "rows": rows}
    out["max_brute_rel_error"] = max(p["n_brute_rel_error"] for k in laws
                                     for p in out[k]["plans"])
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.0)
    for k, (key, label) in enumerate((("hoffmann", "Hoffmann et al. 2022, approach 3"),
                                      ("besiroglu", "Besiroglu et al. 2024 refit"))):
        plans = results[key]["plans"]
        ax.plot([p["compute"] for p in plans], [p["tokens_per_parameter"] for p in plans],
                "o-", color=PALETTE[k], label=f"{label} (a = {results[key]['a']:.2f})")
    ax.axvline(results["chinchilla_compute"], color="0.5", ls=":", lw=0.8)
    ax.axhline(20, color="0.5", ls="--", lw=0.8, label="the 20 tokens/parameter rule")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("optimal tokens per parameter D*/N*")
    ax.legend(fontsize=7)
    return {"tokens_per_parameter": fig}


def check(results: dict[str, Any]) -> None:
    """The closed-form plan is the iso-FLOP minimum, and the two published parameter sets
    disagree on tokens per parameter at Chinchilla's budget by more than a factor of 3."""
    assert results["max_brute_rel_error"] < 0.01, results["max_brute_rel_error"]
    h = results["hoffmann"]["at_chinchilla"]["tokens_per_parameter"]
    b = results["besiroglu"]["at_chinchilla"]["tokens_per_parameter"]
    assert h > 3 * b, (h, b)


EXPERIMENT = Experiment(
    name="architectures_planner", stage=14, title="Compute-optimal plans on published laws",
    quick=Config(budgets=(1e17, 5.76e23), grid_points=401),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{k} tokens/param at Chinchilla's C",
                        f"{r[k]['at_chinchilla']['tokens_per_parameter']:.1f}")
                       for k in ("hoffmann", "besiroglu")],
)
