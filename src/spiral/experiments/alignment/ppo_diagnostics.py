"""PPO's diagnostics during a run on the true reward: clip fraction, approximate KL, critic.

The same PPO as in the method comparison (β_KL = 0.1), scored at every iteration: the share
of tokens whose probability ratio left [1 − ε, 1 + ε], the k3 estimate of KL(π_old ‖ π)
after each minibatch step, and the critic's explained variance 1 − Var(R − V)/Var(R) on
each fresh batch. Three seeds. Chapter: stage 16, "The PPO loop".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.align import NamesTask, PPOConfig, ScalarHeadGPT, sft_policy, train_ppo
from spiral.align.evaluation import true_reward_fn
from spiral.align.models import SFTConfig
from spiral.experiments.alignment.common import FULL_SFT, QUICK_SFT
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure

KEYS = ("clipfrac", "approx_kl", "explained_var")


@dataclass(frozen=True)
class Config:
    sft: SFTConfig = FULL_SFT
    ppo: PPOConfig = PPOConfig(iterations=40, lr=3e-4, kl_coef=0.1, eval_every=1,
                               eval_samples=64)
    seeds: tuple[int, ...] = (0, 1, 2)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    task = NamesTask.build()
    runs = []
    for seed in config.seeds:
        srng = np.random.default_rng(seed)
        ref, policy = sft_policy(config.sft, task), sft_policy(config.sft, task)
        hist = train_ppo(policy, ref, ScalarHeadGPT.from_policy(ref, srng), task,
                         true_reward_fn(task), config.ppo, srng)
        runs.append({k: [h[k] for h in hist[1:]] for k in KEYS})  # record i: iteration i
    half = config.ppo.iterations // 2
    out: dict[str, Any] = {"runs": runs}
    for k in KEYS:
        out[f"{k}_first_half"] = mean_sd([float(np.mean(r[k][:half])) for r in runs])
        out[f"{k}_second_half"] = mean_sd([float(np.mean(r[k][half:])) for r in runs])
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 3, width=7.6, height=2.5)
    titles = {"clipfrac": "clip fraction", "approx_kl": "approx. KL(π_old ‖ π) per token",
              "explained_var": "critic's explained variance"}
    for ax, k in zip(axes, KEYS, strict=True):
        for i, r in enumerate(results["runs"]):
            ax.plot(np.arange(1, len(r[k]) + 1), r[k], color=PALETTE[i], lw=1)
        ax.set_title(titles[k], fontsize=9)
        ax.set_xlabel("PPO iteration")
    axes[2].axhline(0.0, color=PALETTE[6], lw=0.6, ls=":")
    axes[2].set_ylim(-1.0, 1.0)
    return {"ppo_diagnostics": fig}


def check(results: dict[str, Any]) -> None:
    for r in results["runs"]:
        assert all(0.0 <= c <= 1.0 for c in r["clipfrac"])
        assert all(a >= 0.0 for a in r["approx_kl"])     # k3 is never negative
    if len(results["runs"]) >= 3:  # full run: the critic catches up
        assert (results["explained_var_second_half"]["mean"]
                > results["explained_var_first_half"]["mean"])


EXPERIMENT = Experiment(
    name="alignment_ppo_diagnostics", stage=16, title="PPO's diagnostics",
    quick=replace(Config(), sft=QUICK_SFT, seeds=(0,),
                  ppo=PPOConfig(iterations=3, batch_size=32, epochs=2, lr=3e-3, eval_every=1,
                                eval_samples=16)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(k, r[f"{k}_second_half"]["mean"]) for k in KEYS],
)
