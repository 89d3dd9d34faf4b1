"""Preference data: pairs of SFT completions labelled by a Bradley–Terry draw from r*.

For each prompt x two completions y₁, y₂ ~ π_SFT(·|x) are sampled and the label is drawn,
y₁ ≻ y₂ with probability σ((r*(y₁) − r*(y₂))/τ) (see :mod:`spiral.align.task`). The pairs
keep both true rewards, so the Bayes-optimal accuracy of any held-out set is exact.
Chapter: stage 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.align.rollout import sample
from spiral.align.task import NamesTask, preference_probability, true_rewards


@dataclass(frozen=True)
class Pairs:
    """Chosen (w) and rejected (l) rows (B, T), their completion masks and true rewards."""

    chosen: np.ndarray
    rejected: np.ndarray
    mask_chosen: np.ndarray
    mask_rejected: np.ndarray
    r_chosen: np.ndarray
    r_rejected: np.ndarray
    prompt_len: int

    def __len__(self) -> int:
        return len(self.chosen)

    def subset(self, idx: Any) -> Pairs:
        return Pairs(self.chosen[idx], self.rejected[idx], self.mask_chosen[idx],
                     self.mask_rejected[idx], self.r_chosen[idx], self.r_rejected[idx],
                     self.prompt_len)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Row lengths (prompt + completion with its end marker) of chosen and rejected."""
        p = self.prompt_len
        return (p + self.mask_chosen.sum(1).astype(np.int64),
                p + self.mask_rejected.sum(1).astype(np.int64))


def make_pairs(policy: Any, task: NamesTask, n: int, temperature: float,
               rng: np.random.Generator, batch_size: int = 256) -> Pairs:
    """``n`` labelled pairs of completions from ``policy``, prompts from the task."""
    if n < 1:
        raise ValueError(f"need at least one pair, got n={n}")
    rows1, rows2, m1, m2 = [], [], [], []
    max_new = task.seq_len - task.prompt_len
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        prompts = task.sample_prompts(b, rng)
        both, mask = sample(policy, np.concatenate([prompts, prompts]), max_new, task.end_id, rng)
        rows1.append(both[:b])
        rows2.append(both[b:])
        m1.append(mask[:b])
        m2.append(mask[b:])
    t1, t2 = np.concatenate(rows1), np.concatenate(rows2)
    r1, r2 = true_rewards(task.decode(t1)), true_rewards(task.decode(t2))
    first_wins = rng.random(n) < preference_probability(r1, r2, temperature)
    w = first_wins[:, None]
    mask1, mask2 = np.concatenate(m1), np.concatenate(m2)
    return Pairs(np.where(w, t1, t2), np.where(w, t2, t1), np.where(w, mask1, mask2),
                 np.where(w, mask2, mask1), np.where(first_wins, r1, r2),
                 np.where(first_wins, r2, r1), task.prompt_len)
