"""The DPO derivation checked on a tabular policy: the minimiser is π_ref·exp(r/β)/Z.

Eight outputs, a random reference policy and random rewards. For each β the population DPO
loss is minimised by gradient descent on the policy's logits (the library's loss and
autograd, float64); the result is compared with the closed form, and the implicit reward
β·log π/π_ref with r (up to the constant −β log Z). Chapter: stage 16, "The closed form".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.align.tabular import fit_dpo, implicit_reward, log_partition, optimal_policy
from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    n_outputs: int = 8
    betas: tuple[float, ...] = (0.25, 1.0, 4.0)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    pi_ref = rng.dirichlet(np.ones(config.n_outputs) * 2)
    reward = rng.normal(size=config.n_outputs)
    out: dict[str, Any] = {"pi_ref": pi_ref.tolist(), "reward": reward.tolist(), "beta": {}}
    for beta in config.betas:
        pi, steps = fit_dpo(pi_ref, reward, beta)
        star = optimal_policy(pi_ref, reward, beta)
        shift = implicit_reward(pi, pi_ref, beta) - reward
        out["beta"][f"{beta:g}"] = {
            "pi_dpo": pi.tolist(), "pi_star": star.tolist(), "steps": steps,
            "max_policy_error": float(np.abs(pi - star).max()),
            "reward_spread": float(np.ptp(shift)),          # r recovered up to a constant
            "constant": float(shift.mean()),
            "minus_beta_log_z": -beta * log_partition(pi_ref, reward, beta)}
    worst = max(v["max_policy_error"] for v in out["beta"].values())
    spread = max(v["reward_spread"] for v in out["beta"].values())
    out["max_policy_error"] = worst
    out["max_reward_spread"] = spread
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    betas = list(results["beta"])
    fig, axes = new_figure(1, len(betas), width=7.2, height=2.6, sharey=True)
    order = np.argsort(results["reward"])
    x = np.arange(len(order))
    ref = np.array(results["pi_ref"])[order]
    for ax, b in zip(np.atleast_1d(axes), betas, strict=True):
        v = results["beta"][b]
        ax.bar(x - 0.2, ref, width=0.4, color=PALETTE[6], label="π_ref")
        ax.bar(x + 0.2, np.array(v["pi_dpo"])[order], width=0.4, color=PALETTE[0],
               label="DPO minimiser")
        ax.plot(x + 0.2, np.array(v["pi_star"])[order], "_", color=PALETTE[1], ms=12, mew=2,
                label="π_ref·exp(r/β)/Z")
        ax.set_title(f"β = {b}", fontsize=9)
        ax.set_xticks(x, [f"{results['reward'][i]:.1f}" for i in order], fontsize=7)
        ax.set_xlabel("output, by reward r")
    np.atleast_1d(axes)[0].set_ylabel("probability")
    np.atleast_1d(axes)[0].legend(fontsize=7, frameon=False, loc="upper left")
    return {"tabular_dpo": fig}


def check(results: dict[str, Any]) -> None:
    assert results["max_policy_error"] < 1e-6, results["max_policy_error"]
    assert results["max_reward_spread"] < 1e-6, results["max_reward_spread"]
    for v in results["beta"].values():
        assert abs(v["constant"] - v["minus_beta_log_z"]) < 1e-6


EXPERIMENT = Experiment(
    name="alignment_tabular_dpo", stage=16, title="DPO's minimiser is the closed-form optimum",
    quick=Config(n_outputs=5, betas=(0.5, 2.0)), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("max |π_DPO − π*|", f"{r['max_policy_error']:.1e}"),
                       ("max spread of β log π/π_ref − r", f"{r['max_reward_spread']:.1e}")],
)
