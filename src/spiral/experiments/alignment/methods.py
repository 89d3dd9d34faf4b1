"""PPO, DPO and GRPO from the same SFT policy, scored by the true reward and the KL.

Each method starts from the SFT policy (also the frozen reference) and is scored on fresh
samples by the true reward r* and by KL(π ‖ π_ref) (exact per state, summed along a name):
PPO and GRPO optimise r* itself, DPO learns from 4,000 preference pairs labelled by a
Bradley–Terry draw from r*. Three seeds; the wall time of each run is recorded with the
machine's load average. Chapter: stage 16, "Three ways up the hill".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
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
from spiral.align.evaluation import samples
from spiral.align.models import SFTConfig
from spiral.experiments.alignment.common import FULL_SFT, QUICK_SFT, TEMPERATURE, load_average
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure

METHODS = ("ppo", "dpo", "grpo")
COLORS = {"ppo": PALETTE[0], "dpo": PALETTE[1], "grpo": PALETTE[2]}


@dataclass(frozen=True)
class Config:
    sft: SFTConfig = FULL_SFT
    ppo: PPOConfig = PPOConfig(iterations=40, lr=3e-4, kl_coef=0.1, eval_every=5)
    grpo: GRPOConfig = GRPOConfig(iterations=40, lr=3e-4, kl_coef=0.2, eval_every=5)
    dpo: DPOConfig = DPOConfig(steps=200, lr=3e-4, beta=0.1, eval_every=25)
    n_pairs: int = 4000
    temperature: float = TEMPERATURE
    final_samples: int = 1000
    n_show: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)


def _run_method(method: str, config: Config, task: NamesTask, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ref, policy = sft_policy(config.sft, task), sft_policy(config.sft, task)
    reward = true_reward_fn(task)
    t0 = time.perf_counter()
    load = load_average()
    if method == "ppo":
        critic = ScalarHeadGPT.from_policy(ref, rng)
        hist = train_ppo(policy, ref, critic, task, reward, config.ppo, rng)
        x = [h["iteration"] * config.ppo.batch_size for h in hist]
    elif method == "grpo":
        hist = train_grpo(policy, ref, task, reward, config.grpo, rng)
        x = [h["iteration"] * config.grpo.prompts * config.grpo.group_size for h in hist]
    else:
        pairs = make_pairs(ref, task, config.n_pairs, config.temperature, rng)
        hist = train_dpo(policy, ref, pairs, task, config.dpo, rng)
        x = [h["step"] * config.dpo.batch_size * 2 for h in hist]
    wall = time.perf_counter() - t0
    final = evaluate_policy(policy, ref, task, config.final_samples, np.random.default_rng(99))
    show = samples(policy, task, config.n_show, np.random.default_rng(7))
    return {"history": {"x": x, "true_reward": [h["true_reward"] for h in hist],
                        "kl": [h["kl"] for h in hist]},
            "final": final, "samples": show, "wall_s": wall, "load": load}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    task = NamesTask.build()
    ref = sft_policy(config.sft, task)
    base = evaluate_policy(ref, ref, task, config.final_samples, np.random.default_rng(99))
    out: dict[str, Any] = {"sft": {"true_reward": base["true_reward"], "length": base["length"],
                                   "samples": samples(ref, task, config.n_show,
                                                      np.random.default_rng(7))}}
    runs = {m: [_run_method(m, config, task, s) for s in config.seeds] for m in METHODS}
    for m, rs in runs.items():
        out[m] = {"true_reward": mean_sd([r["final"]["true_reward"] for r in rs]),
                  "kl": mean_sd([r["final"]["kl"] for r in rs]),
                  "length": mean_sd([r["final"]["length"] for r in rs]),
                  "gain": mean_sd([r["final"]["true_reward"] - base["true_reward"] for r in rs]),
                  "wall_s": mean_sd([r["wall_s"] for r in rs]),
                  "load": float(np.mean([r["load"] for r in rs])),
                  "history": [r["history"] for r in rs], "samples": rs[0]["samples"]}
    needs = {"ppo": "policy, reference, critic, reward", "dpo": "policy, reference",
             "grpo": "policy, reference, reward program"}
    drawn = {"ppo": config.ppo.iterations * config.ppo.batch_size,
             "grpo": config.grpo.iterations * config.grpo.prompts * config.grpo.group_size,
             "dpo": 2 * config.n_pairs}
    out["table"] = {"columns": ["method", "true reward", "KL (nats)", "models in memory",
                                "samples drawn", "wall time (s)"],
                    "rows": [["SFT", f"{base['true_reward']:.3f}", "0", "—", "—", "—"]] + [
                        [m.upper(), f"{out[m]['true_reward']['mean']:.3f} ± "
                         f"{out[m]['true_reward']['sd']:.3f}",
                         f"{out[m]['kl']['mean']:.2f} ± {out[m]['kl']['sd']:.2f}", needs[m],
                         drawn[m], f"{out[m]['wall_s']['mean']:.0f} (load {out[m]['load']:.1f})"]
                        for m in METHODS]}
    out["samples_table"] = {"columns": ["SFT"] + [m.upper() for m in METHODS],
                            "rows": [list(r) for r in zip(out["sft"]["samples"],
                                                          *(out[m]["samples"] for m in METHODS),
                                                          strict=True)]}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.4)
    for m in METHODS:
        for i, h in enumerate(results[m]["history"]):
            ax.plot(h["kl"], h["true_reward"], "-", color=COLORS[m], alpha=0.35, lw=1)
            ax.plot(h["kl"][-1:], h["true_reward"][-1:], "o", color=COLORS[m], ms=3,
                    label=None if i else m.upper())
        f = results[m]
        ax.errorbar(f["kl"]["mean"], f["true_reward"]["mean"], xerr=f["kl"]["sd"],
                    yerr=f["true_reward"]["sd"], fmt="D", color=COLORS[m], ms=6, capsize=3)
    ax.plot([0], [results["sft"]["true_reward"]], "k*", ms=9, label="SFT (reference)")
    ax.set_xlabel("KL(π ‖ π_ref)  (nats per name)")
    ax.set_ylabel("true reward (share of vowels)")
    ax.legend(fontsize=8, frameon=False, loc="lower right")

    fig2, axes = new_figure(1, 2, width=7.2, height=2.8)
    for m in METHODS:
        for i, h in enumerate(results[m]["history"]):
            frac = np.array(h["x"]) / max(h["x"][-1], 1)
            axes[0].plot(frac, h["true_reward"], color=COLORS[m], lw=1,
                         label=None if i else m.upper())
            axes[1].plot(frac, h["kl"], color=COLORS[m], lw=1)
    axes[0].set_ylabel("true reward")
    axes[1].set_ylabel("KL(π ‖ π_ref) (nats)")
    for a in axes:
        a.set_xlabel("fraction of training")
    axes[0].legend(fontsize=8, frameon=False)
    return {"reward_vs_kl": fig, "training_curves": fig2}


def check(results: dict[str, Any]) -> None:
    base = results["sft"]["true_reward"]
    for m in METHODS:
        g = results[m]["gain"]
        assert g["mean"] > 0, (m, g)
        assert results[m]["kl"]["mean"] > 0
        if len(g["values"]) >= 3:  # full run: a clear margin, every seed above the baseline
            assert g["mean"] > 3 * max(g["sd"], 1e-3) and min(g["values"]) > 0, (m, g)
            assert results[m]["true_reward"]["mean"] > base + 0.05
    if len(results["ppo"]["gain"]["values"]) >= 3:  # PPO's shortcut: shorter names
        assert results["ppo"]["length"]["mean"] < results["sft"]["length"] - 1.0


EXPERIMENT = Experiment(
    name="alignment_methods", stage=16, title="PPO, DPO and GRPO on the true reward",
    quick=replace(Config(), sft=QUICK_SFT, seeds=(0,), n_pairs=64, final_samples=64, n_show=3,
                  ppo=PPOConfig(iterations=4, batch_size=32, epochs=2, lr=3e-3, eval_every=4,
                                eval_samples=32),
                  grpo=GRPOConfig(iterations=4, prompts=4, group_size=4, lr=3e-3, eval_every=4,
                                  eval_samples=32),
                  dpo=DPOConfig(steps=10, lr=3e-3, eval_every=10, eval_samples=32)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(m, f"{r[m]['true_reward']['mean']:.3f} at KL {r[m]['kl']['mean']:.2f}")
                       for m in METHODS],
)
