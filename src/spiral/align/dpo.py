"""DPO: fit the policy to preference pairs directly, with the reference's log-probs as constants.

    L = mean ℓ(h),   h = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]

with ℓ the sigmoid (DPO), IPO or hinge loss of :func:`spiral.align.objectives.dpo_loss`.
No sampling and no reward model during training: the implicit reward β·log π/π_ref is the
reward model (Rafailov et al., 2023). Chapter: stage 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral import checkpoint
from spiral.align.evaluation import RewardFn, evaluate_policy, write_metrics
from spiral.align.objectives import dpo_loss
from spiral.align.preferences import Pairs
from spiral.align.rollout import token_logprobs, token_logprobs_np
from spiral.align.task import NamesTask
from spiral.optim import AdamW, clip_grad_norm_


@dataclass(frozen=True)
class DPOConfig:
    steps: int = 300
    batch_size: int = 32         # pairs per step
    lr: float = 5e-4
    beta: float = 0.1
    loss_type: str = "sigmoid"   # sigmoid | ipo | hinge
    eval_every: int = 50
    eval_samples: int = 256


def sequence_logprobs(token_lp: Any, mask: np.ndarray) -> Any:
    """(B,) log π(y|x) = Σ over the completion tokens of (B, T − 1) token log-probs."""
    return (token_lp * mask).sum(-1)


def train_dpo(policy: Any, ref: Any, pairs: Pairs, task: NamesTask, config: DPOConfig,
              rng: np.random.Generator, *, proxy: RewardFn | None = None,
              out_dir: str | Path | None = None) -> list[dict[str, float]]:
    """Minimise the DPO-family loss on ``pairs``; returns per-evaluation records."""
    opt = AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    ref_w = sequence_logprobs(token_logprobs_np(ref, pairs.chosen), pairs.mask_chosen)
    ref_l = sequence_logprobs(token_logprobs_np(ref, pairs.rejected), pairs.mask_rejected)
    history: list[dict[str, float]] = []
    losses: list[float] = []
    margins: list[float] = []
    for step in range(config.steps + 1):
        if step % config.eval_every == 0 or step == config.steps:
            rec = {"step": step, **evaluate_policy(policy, ref, task, config.eval_samples,
                                                   rng, proxy),
                   "loss": float(np.mean(losses)) if losses else float("nan"),
                   "implicit_accuracy": float(np.mean(margins)) if margins else float("nan")}
            history.append(rec)
            losses, margins = [], []
        if step == config.steps:
            break
        idx = rng.integers(0, len(pairs), size=min(config.batch_size, len(pairs)))
        b = len(idx)
        lp = token_logprobs(policy, np.concatenate([pairs.chosen[idx], pairs.rejected[idx]]))
        seq = sequence_logprobs(lp, np.concatenate([pairs.mask_chosen[idx],
                                                    pairs.mask_rejected[idx]]))
        loss = dpo_loss(seq[:b], seq[b:], ref_w[idx], ref_l[idx], config.beta, config.loss_type)
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(list(policy.parameters()), 1.0)
        opt.step()
        losses.append(float(loss.item()))
        h = (seq.data[:b] - ref_w[idx]) - (seq.data[b:] - ref_l[idx])
        margins.append(float(np.mean(h > 0)))
    if out_dir is not None:
        write_metrics(out_dir, history)
        checkpoint.save(Path(out_dir) / "policy.safetensors", policy, opt, step=config.steps,
                        rng=rng, meta={"method": "dpo", "beta": config.beta,
                                       "loss_type": config.loss_type})
    return history
