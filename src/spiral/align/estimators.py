"""Advantage estimation and KL estimators for text: GAE, GRPO's group advantages, k1/k2/k3.

GAE (Schulman et al., 2016) over the completion tokens of each row (mask = 1), with the
value of the state after the last token taken as 0 (the episode ends there):

    δ_t = r_t + γ V_{t+1} − V_t,        A_t = δ_t + γλ A_{t+1},        R_t = A_t + V_t

GRPO (Shao et al., 2024) drops the value model: G completions of one prompt with rewards
r_1..r_G get the advantage Â_i = (r_i − mean(r))/(std(r) + eps) on every token, so the
advantages of a group sum to zero.

KL estimators (Schulman, 2020), for samples y ~ π and log ρ = log π_ref(y) − log π(y):

    k1 = −log ρ                (unbiased, can be negative)
    k2 = ½ (log ρ)²            (biased, non-negative)
    k3 = (ρ − 1) − log ρ       (unbiased, non-negative: e^x ≥ 1 + x)

Each is an estimate of KL(π ‖ π_ref) = E_π[log π/π_ref]. Chapter: stage 16.
"""

from __future__ import annotations

import numpy as np


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns), each (B, T), from per-token rewards and values (B, T).

    Tokens where ``mask`` is 0 (prompt, padding) get advantage 0 and cut the recursion,
    so a row's completion must be one contiguous run of ones.
    """
    rewards, values, mask = (np.asarray(a, dtype=np.float64) for a in (rewards, values, mask))
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(f"rewards {rewards.shape}, values {values.shape} and mask {mask.shape} "
                         "must have one shape (B, T)")
    B, T = rewards.shape
    adv = np.zeros((B, T))
    next_adv = np.zeros(B)
    next_value = np.zeros(B)
    for t in range(T - 1, -1, -1):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        next_adv = np.where(m > 0, a, 0.0)
        next_value = np.where(m > 0, values[:, t], 0.0)
    return adv, (adv + values) * mask


def group_advantages(rewards: np.ndarray, group_size: int, eps: float = 1e-6) -> np.ndarray:
    """GRPO: (B,) rewards in consecutive groups of ``group_size`` -> normalised advantages."""
    r = np.asarray(rewards, dtype=np.float64)
    if group_size < 2 or r.size % group_size:
        raise ValueError(f"{r.size} rewards do not split into groups of {group_size} (>= 2)")
    g = r.reshape(-1, group_size)
    return ((g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, keepdims=True) + eps)).ravel()


def kl_k1(logp: np.ndarray, ref_logp: np.ndarray) -> np.ndarray:
    """k1 = log π − log π_ref (per sample or token)."""
    return np.asarray(logp) - np.asarray(ref_logp)


def kl_k2(logp: np.ndarray, ref_logp: np.ndarray) -> np.ndarray:
    """k2 = ½ (log π − log π_ref)²."""
    return 0.5 * kl_k1(logp, ref_logp) ** 2


def kl_k3(logp: np.ndarray, ref_logp: np.ndarray) -> np.ndarray:
    """k3 = (ρ − 1) − log ρ with ρ = π_ref/π: never negative."""
    log_rho = np.asarray(ref_logp) - np.asarray(logp)
    return np.expm1(log_rho) - log_rho
