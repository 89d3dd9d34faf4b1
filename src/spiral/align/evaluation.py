"""Scoring a policy on the task: mean true reward and KL from the reference, on fresh samples.

    reward = mean r*(y),  y ~ π(·|x),  x ~ prompts
    KL     = mean Σ_t KL(π(·|s_t) ‖ π_ref(·|s_t))    (exact per state, summed along y)

Every method of the chapter is placed on one plane by these two numbers. Chapter: stage 16.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spiral.align.rollout import next_token_kl, sample
from spiral.align.task import NamesTask, true_rewards

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (tokens, mask) -> (B,) rewards


def true_reward_fn(task: NamesTask) -> RewardFn:
    """The verifiable reward r* as a reward function on sampled rows."""
    def fn(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return true_rewards(task.decode(tokens))
    return fn


def evaluate_policy(policy: Any, ref: Any, task: NamesTask, n: int, rng: np.random.Generator,
                    proxy: RewardFn | None = None) -> dict[str, float]:
    """True reward (mean and sd over samples), KL(π ‖ π_ref), mean length, proxy reward."""
    prompts = task.sample_prompts(n, rng)
    tokens, mask = sample(policy, prompts, task.seq_len - task.prompt_len, task.end_id, rng)
    r = true_rewards(task.decode(tokens))
    kl = next_token_kl(policy, ref, tokens, mask)
    out = {"true_reward": float(r.mean()), "true_reward_sd": float(r.std()),
           "kl": float(kl.mean()), "length": float(mask.sum(1).mean())}
    if proxy is not None:
        out["proxy_reward"] = float(np.mean(proxy(tokens, mask)))
    return out


def samples(policy: Any, task: NamesTask, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` names sampled from ``policy`` (for showing before and after)."""
    tokens, _ = sample(policy, task.sample_prompts(n, rng), task.seq_len - task.prompt_len,
                       task.end_id, rng)
    return task.decode(tokens)


def write_metrics(out_dir: str | Path, history: list[dict[str, Any]]) -> None:
    """Append the records to ``out_dir/metrics.jsonl``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        for rec in history:
            f.write(json.dumps(rec) + "\n")
