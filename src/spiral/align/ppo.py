"""PPO for text: a KL-penalised reward, a value model, GAE and the clipped objective.

Each iteration samples completions y ~ π_old(·|x) and builds per-token rewards

    r_t = −β_KL · k3_t  (+ R(x, y) on the last token),   k3_t = (ρ_t − 1) − log ρ_t,
    ρ_t = π_ref(y_t|s_t)/π_old(y_t|s_t)

(k3 is never negative, so the penalty only ever costs; Schulman, 2020). GAE turns the
rewards and the critic's values into advantages (whitened over the batch); then ``epochs``
passes of minibatch AdamW steps minimise the clipped surrogate for the policy and
½(V − R)² for the critic (Schulman et al., 2017; Ziegler et al., 2019; Ouyang et al., 2022).
Diagnostics per iteration: clip fraction, approximate KL(π_old ‖ π) (k3), explained variance.
Chapter: stage 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral import checkpoint
from spiral.align.estimators import gae, kl_k3
from spiral.align.evaluation import RewardFn, evaluate_policy, write_metrics
from spiral.align.models import ScalarHeadGPT
from spiral.align.objectives import clip_fraction, explained_variance, masked_mean, ppo_clip_loss
from spiral.align.rollout import sample, token_logprobs, token_logprobs_np
from spiral.align.task import NamesTask
from spiral.autograd import no_grad
from spiral.optim import AdamW, clip_grad_norm_


@dataclass(frozen=True)
class PPOConfig:
    iterations: int = 60
    batch_size: int = 64        # completions sampled per iteration
    minibatch_size: int = 32
    epochs: int = 4
    lr: float = 1e-3
    value_lr: float = 1e-3
    kl_coef: float = 0.05       # β_KL
    clip_eps: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    max_grad_norm: float = 1.0
    eval_every: int = 10
    eval_samples: int = 256


def _values(critic: ScalarHeadGPT, tokens: np.ndarray) -> np.ndarray:
    critic.eval()
    with no_grad():
        v = critic(tokens[:, :-1]).data.astype(np.float64)  # value of the state before target j
    critic.train()
    return np.asarray(v)


def train_ppo(policy: Any, ref: Any, critic: ScalarHeadGPT, task: NamesTask,
              reward_fn: RewardFn, config: PPOConfig, rng: np.random.Generator, *,
              proxy: RewardFn | None = None, out_dir: str | Path | None = None
              ) -> list[dict[str, float]]:
    """Run PPO; returns per-evaluation records (true reward, KL, diagnostics)."""
    opt = AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    vopt = AdamW(critic.parameters(), lr=config.value_lr, weight_decay=0.0)
    history: list[dict[str, float]] = []
    diag: dict[str, list[float]] = {"clipfrac": [], "approx_kl": [], "explained_var": [],
                                    "score": []}
    max_new = task.seq_len - task.prompt_len
    for it in range(config.iterations + 1):
        if it % config.eval_every == 0 or it == config.iterations:
            rec = {"iteration": it, **evaluate_policy(policy, ref, task, config.eval_samples,
                                                      rng, proxy)}
            rec.update({k: float(np.mean(v)) if v else float("nan") for k, v in diag.items()})
            history.append(rec)
            diag = {k: [] for k in diag}
        if it == config.iterations:
            break
        tokens, mask = sample(policy, task.sample_prompts(config.batch_size, rng), max_new,
                              task.end_id, rng)
        old = token_logprobs_np(policy, tokens)
        ref_lp = token_logprobs_np(ref, tokens)
        values = _values(critic, tokens)
        score = reward_fn(tokens, mask)
        rewards = -config.kl_coef * kl_k3(old, ref_lp) * mask
        last = np.asarray(mask.sum(1) + task.prompt_len - 2, dtype=np.int64)
        rewards[np.arange(len(tokens)), last] += score
        adv, returns = gae(rewards, values, mask, config.gamma, config.lam)
        sel = mask > 0
        adv = np.where(sel, (adv - adv[sel].mean()) / (adv[sel].std() + 1e-8), 0.0)
        diag["explained_var"].append(explained_variance(values, returns, mask))
        diag["score"].append(float(score.mean()))
        for _ in range(config.epochs):
            order = rng.permutation(len(tokens))
            for s in range(0, len(tokens), config.minibatch_size):
                mb = order[s:s + config.minibatch_size]
                logp = token_logprobs(policy, tokens[mb])
                loss = ppo_clip_loss(logp, old[mb], adv[mb], mask[mb], config.clip_eps)
                opt.zero_grad()
                loss.backward()
                clip_grad_norm_(list(policy.parameters()), config.max_grad_norm)
                opt.step()
                lp = logp.data.astype(np.float64)
                diag["clipfrac"].append(clip_fraction(lp, old[mb], mask[mb], config.clip_eps))
                diag["approx_kl"].append(float(masked_mean(kl_k3(lp, old[mb]), mask[mb])))
                v = critic(tokens[mb][:, :-1])
                vloss = masked_mean((v - returns[mb]) ** 2, mask[mb]) * 0.5
                vopt.zero_grad()
                vloss.backward()  # type: ignore[union-attr]
                clip_grad_norm_(list(critic.parameters()), config.max_grad_norm)
                vopt.step()
    if out_dir is not None:
        write_metrics(out_dir, history)
        checkpoint.save(Path(out_dir) / "policy.safetensors", policy, opt,
                        step=config.iterations, rng=rng, meta={"method": "ppo"})
        checkpoint.save(Path(out_dir) / "critic.safetensors", critic, vopt,
                        step=config.iterations, meta={"method": "ppo"})
    return history
