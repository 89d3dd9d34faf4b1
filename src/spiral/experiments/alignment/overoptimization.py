"""Reward over-optimization: optimise a learned reward model and watch the true reward.

Reward models are trained on few and on many preference pairs (early-stopped as in the
reward-model experiment). Each is then optimised in two ways, and both its own score (the
proxy) and the true reward r* are measured against the KL from the SFT policy:

- best-of-n: of n SFT samples keep the one the proxy scores highest; the KL of this policy
  is at most log n − (n − 1)/n (Stiennon et al., 2020; Beirami et al., 2024);
- PPO on the proxy with a small KL coefficient.

Gao, Schulman & Hilton (2022) found the true reward rising, peaking and falling while the
proxy keeps rising. Chapter: stage 16, "Goodhart".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.align import (
    NamesTask,
    PPOConfig,
    RMConfig,
    ScalarHeadGPT,
    make_pairs,
    sft_policy,
    train_ppo,
    train_reward_model,
)
from spiral.align.models import SFTConfig
from spiral.align.reward_model import rm_reward_fn
from spiral.align.rollout import sample
from spiral.align.task import true_rewards
from spiral.experiments.alignment.common import FULL_SFT, QUICK_SFT, TEMPERATURE
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    sft: SFTConfig = FULL_SFT
    rm_sizes: tuple[int, ...] = (250, 1000)
    rm: RMConfig = RMConfig(steps=400, eval_every=50)
    temperature: float = TEMPERATURE
    bon_prompts: int = 64
    bon_max: int = 32                      # n = 1, 2, 4, ..., bon_max
    ppo: PPOConfig = PPOConfig(iterations=60, lr=3e-4, kl_coef=0.01, eval_every=10,
                               eval_samples=128)
    seeds: tuple[int, ...] = (0, 1, 2)


def best_of_n(true_r: np.ndarray, proxy: np.ndarray, n: int) -> tuple[float, float]:
    """(true, proxy) reward of best-of-n, from (prompts, N) samples cut into groups of n."""
    P, N = true_r.shape
    g = N // n
    t = true_r[:, :g * n].reshape(P, g, n)
    s = proxy[:, :g * n].reshape(P, g, n)
    pick = s.argmax(-1)[..., None]
    return (float(np.take_along_axis(t, pick, -1).mean()),
            float(np.take_along_axis(s, pick, -1).mean()))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    task = NamesTask.build()
    ns = [2 ** k for k in range(int(np.log2(config.bon_max)) + 1)]
    out: dict[str, Any] = {"n": ns, "bon_kl": [float(np.log(n) - (n - 1) / n) for n in ns],
                           "rm": {}}
    for size in config.rm_sizes:
        bon_t, bon_p, ppo_runs = [], [], []
        for seed in config.seeds:
            srng = np.random.default_rng(seed)
            ref = sft_policy(config.sft, task)
            pairs = make_pairs(ref, task, size, config.temperature, srng)
            n_val = max(1, size // 10)
            rm = ScalarHeadGPT.from_policy(ref, srng)
            train_reward_model(rm, pairs.subset(slice(n_val, None)), config.rm, srng,
                               val_pairs=pairs.subset(slice(0, n_val)))
            proxy = rm_reward_fn(rm, task)
            prompts = np.repeat(task.sample_prompts(config.bon_prompts, srng), config.bon_max, 0)
            tokens, mask = sample(ref, prompts, task.seq_len - 2, task.end_id, srng)
            shape = (config.bon_prompts, config.bon_max)
            t = true_rewards(task.decode(tokens)).reshape(shape)
            p = proxy(tokens, mask).reshape(shape)
            pts = [best_of_n(t, p, n) for n in ns]
            bon_t.append([a for a, _ in pts])
            bon_p.append([b for _, b in pts])
            critic = ScalarHeadGPT.from_policy(ref, srng)
            hist = train_ppo(sft_policy(config.sft, task), ref, critic, task, proxy, config.ppo,
                             srng, proxy=proxy)
            ppo_runs.append({k: [h[k] for h in hist] for k in ("kl", "true_reward",
                                                               "proxy_reward")})
        peak = [int(np.argmax(r["true_reward"])) for r in ppo_runs]
        drop = [r["true_reward"][i] - r["true_reward"][-1] for r, i in zip(ppo_runs, peak,
                                                                           strict=True)]
        rise = [r["proxy_reward"][-1] - r["proxy_reward"][i] for r, i in zip(ppo_runs, peak,
                                                                             strict=True)]
        out["rm"][str(size)] = {
            "bon_true": np.mean(bon_t, 0).tolist(), "bon_proxy": np.mean(bon_p, 0).tolist(),
            "bon_true_sd": np.std(bon_t, 0, ddof=1).tolist() if len(bon_t) > 1 else None,
            "ppo": ppo_runs, "ppo_true_drop_after_peak": mean_sd(drop),
            "ppo_proxy_rise_after_peak": mean_sd(rise),
            "ppo_final_true": mean_sd([r["true_reward"][-1] for r in ppo_runs]),
            "ppo_peak_true": mean_sd([max(r["true_reward"]) for r in ppo_runs]),
            "ppo_final_kl": mean_sd([r["kl"][-1] for r in ppo_runs]),
            "bon_true_gain": mean_sd(np.array(bon_t)[:, -1] - np.array(bon_t)[:, 0])}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    """Gains from the SFT policy: true reward, and proxy score times τ (a calibrated reward
    model scores r*/τ + const, so τ·Δproxy is in units of r* and would track Δr*)."""
    sizes = list(results["rm"])
    fig, axes = new_figure(1, 2, width=7.4, height=3.0, sharey=True)
    tau = TEMPERATURE
    for k, size in enumerate(sizes):
        v = results["rm"][size]
        c = PALETTE[k]
        bt, bp = np.array(v["bon_true"]), np.array(v["bon_proxy"])
        axes[0].plot(results["bon_kl"], tau * (bp - bp[0]), "--", color=c, lw=1)
        axes[0].plot(results["bon_kl"], bt - bt[0], "-o", color=c, ms=3,
                     label=f"RM from {size} pairs")
        for r in v["ppo"]:
            t, p = np.array(r["true_reward"]), np.array(r["proxy_reward"])
            axes[1].plot(r["kl"], tau * (p - p[0]), "--", color=c, lw=0.8, alpha=0.7)
            axes[1].plot(r["kl"], t - t[0], "-", color=c, lw=1.2)
    for ax in axes:
        ax.axhline(0.0, color=PALETTE[6], lw=0.6, ls=":")
    axes[0].set_title(f"best-of-n (n = 1 … {results['n'][-1]})", fontsize=9)
    axes[1].set_title("PPO on the reward model (one line per seed)", fontsize=9)
    axes[0].set_xlabel("KL bound log n − (n−1)/n (nats)")
    axes[1].set_xlabel("KL(π ‖ π_ref) (nats)")
    axes[0].set_ylabel("gain over SFT\n(solid: true r*, dashed: τ·proxy)")
    axes[0].legend(fontsize=7, frameon=False)
    return {"overoptimization": fig}


def check(results: dict[str, Any]) -> None:
    for v in results["rm"].values():
        assert v["bon_proxy"][-1] > v["bon_proxy"][0]   # the proxy always rises with n
        for r in v["ppo"]:
            assert r["proxy_reward"][-1] > r["proxy_reward"][0]
    sizes = sorted(results["rm"], key=int)
    weak, strong = results["rm"][sizes[0]], results["rm"][sizes[-1]]
    if len(weak["ppo"]) >= 3 and len(sizes) > 1:  # the full run's two stories
        assert min(weak["ppo_true_drop_after_peak"]["values"]) > 0    # every seed peaks, falls
        assert max(strong["ppo_true_drop_after_peak"]["values"]) < 0.02  # no fall here
        assert strong["bon_true_gain"]["mean"] > 0.1


EXPERIMENT = Experiment(
    name="alignment_overoptimization", stage=16, title="Optimising a learned reward model",
    quick=replace(Config(), sft=QUICK_SFT, rm_sizes=(100,), seeds=(0,), bon_prompts=8,
                  bon_max=8, rm=RMConfig(steps=40, lr=3e-3, eval_every=20),
                  ppo=PPOConfig(iterations=4, batch_size=32, epochs=2, lr=3e-3, kl_coef=0.01,
                                eval_every=2, eval_samples=32)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"RM {s}: true drop after peak", v["ppo_true_drop_after_peak"]["mean"])
                       for s, v in r["rm"].items()],
)
