"""The losses of alignment, on our autograd: Bradley–Terry, DPO (and IPO, hinge), PPO-clip.

Bradley–Terry reward-model loss (Bradley & Terry, 1952; Ouyang et al., 2022), for scores s
of the chosen (w) and rejected (l) completion:

    L_BT = −log σ(s_w − s_l)

DPO (Rafailov et al., 2023), with h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]:

    sigmoid  −log σ(β h)                (the Bradley–Terry loss on implicit rewards β·log π/π_ref)
    ipo      (h − 1/(2β))²              (Azar et al., 2023)
    hinge    max(0, 1 − β h)            (SLiC, Zhao et al., 2023)

PPO's clipped surrogate (Schulman et al., 2017), ρ = π(a|s)/π_old(a|s), averaged over the
completion tokens selected by ``mask``:

    L_clip = −mean[min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)]

Its gradient is zero for a token whose ratio left the clip region in the direction the
advantage pushes it: that is what keeps one batch from moving the policy too far.
Chapter: stage 16.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Function, Tensor
from spiral.autograd.ops_shape import where

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


class LogSigmoidFn(Function):
    """log σ(x) = −log(1 + e^{−x}); d/dx = σ(−x). Written as one op: a composition through
    |x| or relu would have a zero subgradient at x = 0, where the true slope is ½."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)
        return -np.logaddexp(0.0, -x)

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        return (grad * np.exp(-np.logaddexp(0.0, x)),)  # σ(−x) without overflow


def log_sigmoid(x: Tensor) -> Tensor:
    """log σ(x), finite for every x (PyTorch: ``F.logsigmoid``)."""
    out = LogSigmoidFn.apply(x)
    assert isinstance(out, Tensor)
    return out


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Mean −log σ(s_w − s_l) over a batch of (B,) scores."""
    return -log_sigmoid(chosen - rejected).mean()


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: np.ndarray,
             ref_rejected: np.ndarray, beta: float, loss_type: str = "sigmoid",
             weights: np.ndarray | None = None) -> Tensor:
    """The DPO family on (B,) sequence log-probabilities; the reference ones are constants.

    ``weights`` (B,) turn the mean into Σ w·ℓ / Σ w (a population loss over enumerated pairs).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    h = (policy_chosen - policy_rejected) - (np.asarray(ref_chosen) - np.asarray(ref_rejected))
    if loss_type == "sigmoid":
        per_pair = -log_sigmoid(h * beta)
    elif loss_type == "ipo":
        per_pair = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        per_pair = (1.0 - h * beta).relu()
    if weights is None:
        return per_pair.mean()
    w = np.asarray(weights, dtype=np.float64)
    return (per_pair * (w / w.sum())).sum()


def masked_mean(x: Tensor | np.ndarray, mask: np.ndarray) -> Tensor | np.ndarray:
    """Σ x·mask / Σ mask (the mean over the selected tokens)."""
    return (x * mask).sum() / max(float(np.sum(mask)), 1.0)


def ppo_clip_loss(logp: Tensor, old_logp: np.ndarray, advantages: np.ndarray,
                  mask: np.ndarray, clip_eps: float = 0.2) -> Tensor:
    """−mean[min(ρA, clip(ρ, 1−ε, 1+ε)A)] over the masked tokens; all inputs (B, T)."""
    ratio = (logp - old_logp).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    surrogate = where(unclipped.data <= clipped.data, unclipped, clipped)
    out = masked_mean(surrogate, mask)
    assert isinstance(out, Tensor)
    return -out


def clip_fraction(logp: np.ndarray, old_logp: np.ndarray, mask: np.ndarray,
                  clip_eps: float = 0.2) -> float:
    """Share of masked tokens whose ratio lies outside [1 − ε, 1 + ε]."""
    ratio = np.exp(np.asarray(logp) - old_logp)
    return float(masked_mean((np.abs(ratio - 1.0) > clip_eps).astype(np.float64), mask))


def explained_variance(values: np.ndarray, returns: np.ndarray, mask: np.ndarray) -> float:
    """1 − Var(returns − values)/Var(returns) over the masked tokens (1 = perfect critic)."""
    m = mask > 0
    var = float(np.var(returns[m]))
    return float("nan") if var == 0 else 1.0 - float(np.var(returns[m] - values[m])) / var
