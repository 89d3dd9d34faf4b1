"""The KL knob of each method: DPO's β (and its loss family), PPO's and GRPO's KL coefficients.

Each setting trains from the SFT policy and is scored on fresh samples by the true reward
and KL(π ‖ π_ref): the points trace the reward–KL frontier each method reaches. DPO's IPO
and hinge losses are run at one β on the same pairs. Three seeds; each point is mean ± sd
(points run in parallel worker processes, each with its own seeded generator).
Chapter: stage 16, "Turning the KL knob".
"""

from __future__ import annotations

import multiprocessing
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from spiral.align import (
    DPOConfig,
    GRPOConfig,
    NamesTask,
    PPOConfig,
    ScalarHeadGPT,
    evaluate_policy,
    make_pairs,
    sft_policy,
    train_dpo,
    train_grpo,
    train_ppo,
    true_reward_fn,
)
from spiral.align.models import SFTConfig
from spiral.experiments.alignment.common import FULL_SFT, QUICK_SFT, TEMPERATURE
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    sft: SFTConfig = FULL_SFT
    dpo: DPOConfig = DPOConfig(steps=200, lr=3e-4, eval_every=200, eval_samples=64)
    ppo: PPOConfig = PPOConfig(iterations=40, lr=3e-4, eval_every=40, eval_samples=64)
    betas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    kl_coefs: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    grpo: GRPOConfig = GRPOConfig(iterations=40, lr=3e-4, eval_every=40, eval_samples=64)
    grpo_kl_coefs: tuple[float, ...] = (0.05, 0.2, 1.0)
    loss_types: tuple[str, ...] = ("ipo", "hinge")
    loss_type_beta: float = 0.1
    n_pairs: int = 4000
    temperature: float = TEMPERATURE
    final_samples: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2)
    workers: int = 2  # worker processes, one (seed, setting) point each


def _score(policy: Any, ref: Any, task: NamesTask, n: int) -> dict[str, float]:
    return evaluate_policy(policy, ref, task, n, np.random.default_rng(99))


@lru_cache(maxsize=4)
def _pairs(config: Config, seed: int) -> Any:
    """The seed's preference pairs (shared by its DPO settings; cached per process)."""
    task = NamesTask.build()
    return make_pairs(sft_policy(config.sft, task), task, config.n_pairs, config.temperature,
                      np.random.default_rng(seed))


def _job(config: Config, seed: int, group: str, key: str) -> dict[str, float]:
    """Train one (seed, method, setting) point from the SFT policy and score it."""
    task = NamesTask.build()
    ref = sft_policy(config.sft, task)
    pol = sft_policy(config.sft, task)
    rng = np.random.default_rng([seed, zlib.crc32(f"{group}/{key}".encode())])
    if group == "dpo":
        train_dpo(pol, ref, _pairs(config, seed), task, replace(config.dpo, beta=float(key)), rng)
    elif group == "loss":
        train_dpo(pol, ref, _pairs(config, seed), task,
                  replace(config.dpo, beta=config.loss_type_beta, loss_type=key), rng)
    elif group == "ppo":
        train_ppo(pol, ref, ScalarHeadGPT.from_policy(ref, rng), task, true_reward_fn(task),
                  replace(config.ppo, kl_coef=float(key)), rng)
    else:
        train_grpo(pol, ref, task, true_reward_fn(task), replace(config.grpo, kl_coef=float(key)),
                   rng)
    return _score(pol, ref, task, config.final_samples)


def _star(args: tuple[Config, int, str, str]) -> dict[str, float]:
    return _job(*args)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    task = NamesTask.build()
    ref = sft_policy(config.sft, task)  # trained before forking: the workers inherit the cache
    settings = ([("dpo", str(b)) for b in config.betas] + [("loss", lt) for lt in config.loss_types]
                + [("ppo", str(c)) for c in config.kl_coefs]
                + [("grpo", str(c)) for c in config.grpo_kl_coefs])
    jobs = [(config, seed, g, k) for seed in config.seeds for g, k in settings]
    if config.workers > 1:
        with multiprocessing.get_context("fork").Pool(config.workers) as pool:
            scores = pool.map(_star, jobs, chunksize=1)
    else:
        scores = [_star(j) for j in jobs]
    points: dict[str, dict[str, list[dict[str, float]]]] = {"dpo": {}, "ppo": {}, "grpo": {},
                                                            "loss": {}}
    for (_, _, g, k), sc in zip(jobs, scores, strict=True):
        points[g].setdefault(k, []).append(sc)
    out: dict[str, Any] = {"n_seeds": len(config.seeds), "ppo_iterations": config.ppo.iterations,
                           "sft_true_reward": _score(ref, ref, task,
                                                     config.final_samples)["true_reward"]}
    for group, by in points.items():
        out[group] = {k: {"true_reward": mean_sd([p["true_reward"] for p in v]),
                          "kl": mean_sd([p["kl"] for p in v])} for k, v in by.items()}
    names = {"dpo": "DPO β = {}", "loss": f"DPO ({{}}) β = {config.loss_type_beta}",
             "ppo": "PPO β_KL = {}", "grpo": "GRPO β = {}"}
    out["table"] = {"columns": ["setting", "true reward (mean ± sd)", "KL (nats, mean ± sd)"],
                    "rows": [[names[g].format(k), _pm(v["true_reward"], 3), _pm(v["kl"], 2)]
                             for g in ("dpo", "loss", "ppo", "grpo") for k, v in out[g].items()]}
    return out


def _pm(m: dict[str, float], digits: int) -> str:
    return f"{m['mean']:.{digits}f} ± {m['sd']:.{digits}f}"


_DPO_LABELS = ((6, -12), (-40, -12), (-40, 5))


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.4)
    for group, color, label, sym in (("dpo", PALETTE[1], "DPO, β", "β"),
                                     ("ppo", PALETTE[0], "PPO, β_KL", "β_KL"),
                                     ("grpo", PALETTE[2], "GRPO, β", "β")):
        v = results[group]
        kl = [x["kl"]["mean"] for x in v.values()]
        tr = [x["true_reward"]["mean"] for x in v.values()]
        ax.errorbar(kl, tr, xerr=[x["kl"]["sd"] for x in v.values()],
                    yerr=[x["true_reward"]["sd"] for x in v.values()], fmt="-o", color=color,
                    label=label, ms=4, capsize=2, lw=1.2, elinewidth=0.8)
        for i, (k, x, y) in enumerate(zip(v, kl, tr, strict=True)):
            # DPO's small-β points crowd together near 4 nats: spread their labels
            off = _DPO_LABELS[i] if group == "dpo" and i < len(_DPO_LABELS) else (4, -9)
            ax.annotate(f"{sym}={k}", (x, y), textcoords="offset points", xytext=off,
                        fontsize=7, color=color)
    for lt, x in results["loss"].items():
        ax.errorbar(x["kl"]["mean"], x["true_reward"]["mean"], xerr=x["kl"]["sd"],
                    yerr=x["true_reward"]["sd"], fmt="s", color=PALETTE[3], ms=5, capsize=2,
                    elinewidth=0.8)
        ax.annotate(lt, (x["kl"]["mean"], x["true_reward"]["mean"]), textcoords="offset points",
                    xytext=(4, 3), fontsize=7, color=PALETTE[3])
    ax.axhline(results["sft_true_reward"], color=PALETTE[6], ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("KL(π ‖ π_ref) (nats per name, log scale)")
    ax.set_ylabel("true reward")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return {"kl_sweep": fig}


def check(results: dict[str, Any]) -> None:
    # PPO needs tens of iterations before its KL coefficient shows (quick runs have four)
    for group in ("dpo", "ppo") if results["ppo_iterations"] >= 20 else ("dpo",):
        v = list(results[group].values())
        kl = [x["kl"]["mean"] for x in v]
        # a stronger pull to the reference (larger β) ends closer to it
        assert kl[0] > kl[-1], (group, kl)
    if results["ppo_iterations"] >= 20:  # full run: monotone for PPO and GRPO; IPO stays closer
        for group in ("ppo", "grpo"):
            kl = [x["kl"]["mean"] for x in results[group].values()]
            assert all(a > b for a, b in zip(kl, kl[1:], strict=False)), (group, kl)
        if "ipo" in results["loss"] and "0.1" in results["dpo"]:
            assert results["loss"]["ipo"]["kl"]["mean"] < results["dpo"]["0.1"]["kl"]["mean"]


EXPERIMENT = Experiment(
    name="alignment_sweeps", stage=16, title="DPO's β and PPO's KL coefficient",
    quick=replace(Config(), sft=QUICK_SFT, seeds=(0,), workers=1,
                  betas=(0.1, 3.0), kl_coefs=(0.01, 3.0),
                  loss_types=("ipo",), n_pairs=64, final_samples=64, grpo_kl_coefs=(0.1,),
                  grpo=GRPOConfig(iterations=2, prompts=4, group_size=4, lr=3e-3, eval_every=2,
                                  eval_samples=16),
                  dpo=DPOConfig(steps=15, lr=3e-3, eval_every=15, eval_samples=16),
                  ppo=PPOConfig(iterations=4, batch_size=32, epochs=2, lr=3e-3, eval_every=4,
                                eval_samples=16)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"DPO β={k}", f"{v['true_reward']['mean']:.3f} @ KL {v['kl']['mean']:.2f}")
                       for k, v in r["dpo"].items()],
)
