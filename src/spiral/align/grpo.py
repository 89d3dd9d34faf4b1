"""GRPO: group-relative advantages from a verifiable reward, no value model.

For each prompt x, G completions y_1..y_G ~ π_old(·|x) get rewards r_i from a program and
the advantage Â_i = (r_i − mean r)/(std r + eps) on each of their tokens. The loss is the
clipped surrogate plus a KL penalty inside the loss, with the k3 estimator (Shao et al., 2024):

    L = −mean_t[min(ρ_t Â, clip(ρ_t, 1 − ε, 1 + ε) Â)] + β · mean_t[(π_ref/π − 1) − log(π_ref/π)]

Chapter: stage 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral import checkpoint
from spiral.align.estimators import group_advantages
from spiral.align.evaluation import RewardFn, evaluate_policy, write_metrics
from spiral.align.objectives import clip_fraction, masked_mean, ppo_clip_loss
from spiral.align.rollout import sample, token_logprobs, token_logprobs_np
from spiral.align.task import NamesTask
from spiral.optim import AdamW, clip_grad_norm_


@dataclass(frozen=True)
class GRPOConfig:
    iterations: int = 60
    prompts: int = 8             # prompts per iteration
    group_size: int = 8          # completions per prompt (G)
    epochs: int = 2              # passes over each batch (μ)
    lr: float = 1e-3
    kl_coef: float = 0.05        # β
    clip_eps: float = 0.2
    eval_every: int = 10
    eval_samples: int = 256


def train_grpo(policy: Any, ref: Any, task: NamesTask, reward_fn: RewardFn, config: GRPOConfig,
               rng: np.random.Generator, *, out_dir: str | Path | None = None
               ) -> list[dict[str, float]]:
    """Run GRPO with ``reward_fn`` (the verifiable reward); returns per-evaluation records."""
    opt = AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    history: list[dict[str, float]] = []
    clipfracs: list[float] = []
    max_new = task.seq_len - task.prompt_len
    for it in range(config.iterations + 1):
        if it % config.eval_every == 0 or it == config.iterations:
            history.append({"iteration": it, **evaluate_policy(policy, ref, task,
                                                               config.eval_samples, rng),
                            "clipfrac": float(np.mean(clipfracs)) if clipfracs else 0.0})
            clipfracs = []
        if it == config.iterations:
            break
        prompts = np.repeat(task.sample_prompts(config.prompts, rng), config.group_size, axis=0)
        tokens, mask = sample(policy, prompts, max_new, task.end_id, rng)
        adv = group_advantages(reward_fn(tokens, mask), config.group_size)[:, None] * mask
        old = token_logprobs_np(policy, tokens)
        ref_lp = token_logprobs_np(ref, tokens)
        for _ in range(config.epochs):
            logp = token_logprobs(policy, tokens)
            log_rho = (-logp) + ref_lp               # log π_ref/π, differentiable in π
            k3 = log_rho.exp() - log_rho - 1.0
            loss = ppo_clip_loss(logp, old, adv, mask, config.clip_eps) \
                + masked_mean(k3, mask) * config.kl_coef
            opt.zero_grad()
            loss.backward()
            clip_grad_norm_(list(policy.parameters()), 1.0)
            opt.step()
            clipfracs.append(clip_fraction(logp.data, old, mask, config.clip_eps))
    if out_dir is not None:
        write_metrics(out_dir, history)
        checkpoint.save(Path(out_dir) / "policy.safetensors", policy, opt,
                        step=config.iterations, rng=rng, meta={"method": "grpo"})
    return history
