"""Reward-model accuracy against the Bayes ceiling, as the number of preference pairs grows.

Pairs of SFT samples are labelled by a Bradley–Terry draw from the true reward at
temperature τ. For each training-set size a reward model (the SFT trunk with a scalar head)
is trained with the Bradley–Terry loss, early-stopped on a validation slice of its own
pairs, and scored on 1,000 held-out pairs: accuracy on the drawn labels, accuracy in
expectation over the labels, and the Bayes-optimal accuracy E[max(p, 1 − p)] of the
labelling model itself. Three seeds. Chapter: stage 16, "A reward model".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.align import NamesTask, RMConfig, ScalarHeadGPT, make_pairs, sft_policy
from spiral.align.models import SFTConfig
from spiral.align.reward_model import evaluate_rm, train_reward_model
from spiral.experiments.alignment.common import FULL_SFT, QUICK_SFT, TEMPERATURE
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    sft: SFTConfig = FULL_SFT
    sizes: tuple[int, ...] = (500, 1000, 2000, 4000)
    n_test: int = 1000
    rm: RMConfig = RMConfig(steps=300, eval_every=50)
    temperature: float = TEMPERATURE
    seeds: tuple[int, ...] = (0, 1, 2)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    task = NamesTask.build()
    per: dict[int, dict[str, list[float]]] = {n: {"acc": [], "exp": [], "bayes": []}
                                              for n in config.sizes}
    for seed in config.seeds:
        srng = np.random.default_rng(seed)
        ref = sft_policy(config.sft, task)
        pairs = make_pairs(ref, task, max(config.sizes) + config.n_test, config.temperature, srng)
        test = pairs.subset(slice(0, config.n_test))
        for n in config.sizes:
            train = pairs.subset(slice(config.n_test, config.n_test + n))
            n_val = max(1, n // 10)
            rm = ScalarHeadGPT.from_policy(ref, srng)
            train_reward_model(rm, train.subset(slice(n_val, None)), config.rm, srng,
                               val_pairs=train.subset(slice(0, n_val)))
            ev = evaluate_rm(rm, test, config.temperature)
            per[n]["acc"].append(ev["accuracy"])
            per[n]["exp"].append(ev["expected_accuracy"])
            per[n]["bayes"].append(ev["bayes_accuracy"])
    out: dict[str, Any] = {"sizes": list(config.sizes), "by_size": {}}
    for n in config.sizes:
        gap = np.array(per[n]["bayes"]) - np.array(per[n]["exp"])
        out["by_size"][str(n)] = {"accuracy": mean_sd(per[n]["acc"]),
                                  "expected_accuracy": mean_sd(per[n]["exp"]),
                                  "bayes_accuracy": mean_sd(per[n]["bayes"]),
                                  "gap_points": mean_sd(100 * gap)}
    best = out["by_size"][str(max(config.sizes))]
    out["headline"] = best
    rows = [[n, f"{v['expected_accuracy']['mean']:.3f} ± {v['expected_accuracy']['sd']:.3f}",
             f"{v['accuracy']['mean']:.3f} ± {v['accuracy']['sd']:.3f}",
             f"{v['bayes_accuracy']['mean']:.3f}",
             f"{v['gap_points']['mean']:.1f} ± {v['gap_points']['sd']:.1f}"]
            for n, v in ((int(k), v) for k, v in out["by_size"].items())]
    out["table"] = {"columns": ["training pairs", "expected accuracy", "accuracy (drawn labels)",
                                "Bayes-optimal", "gap (points)"], "rows": rows}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.0)
    sizes = results["sizes"]
    v = [results["by_size"][str(n)] for n in sizes]
    ax.errorbar(sizes, [x["expected_accuracy"]["mean"] for x in v],
                yerr=[x["expected_accuracy"]["sd"] for x in v], marker="o", color=PALETTE[0],
                label="reward model (expected accuracy)", capsize=3)
    ax.plot(sizes, [x["accuracy"]["mean"] for x in v], "s", color=PALETTE[4], ms=4,
            label="reward model (drawn labels)")
    ax.plot(sizes, [x["bayes_accuracy"]["mean"] for x in v], "--", color=PALETTE[1],
            label="Bayes-optimal (the labelling model)")
    ax.axhline(0.5, color=PALETTE[6], lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("training pairs")
    ax.set_ylabel("held-out preference accuracy")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return {"rm_accuracy": fig}


def check(results: dict[str, Any]) -> None:
    sizes = results["sizes"]
    for n in sizes:
        v = results["by_size"][str(n)]
        assert v["expected_accuracy"]["mean"] <= v["bayes_accuracy"]["mean"] + 1e-9
        assert v["expected_accuracy"]["mean"] > 0.5
    if max(sizes) >= 4000:  # the full run's claim: within 2 points of the ceiling
        assert results["headline"]["gap_points"]["mean"] < 2.0, results["headline"]


EXPERIMENT = Experiment(
    name="alignment_reward_model", stage=16, title="Reward-model accuracy vs the Bayes ceiling",
    quick=replace(Config(), sft=QUICK_SFT, sizes=(200, 600), n_test=200, seeds=(0,),
                  rm=RMConfig(steps=120, lr=3e-3, eval_every=20)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("gap to Bayes (points)", r["headline"]["gap_points"]["mean"])],
)
