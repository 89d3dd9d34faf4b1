"""The DPO derivation on a policy small enough to enumerate: n outputs, one prompt.

The KL-regularised objective J(π) = E_π[r] − β·KL(π ‖ π_ref) is maximised by

    π*(y) = π_ref(y) · exp(r(y)/β) / Z,      Z = Σ_y π_ref(y) exp(r(y)/β),   J(π*) = β log Z.

Inverting, r(y) = β log π*(y)/π_ref(y) + β log Z: in a Bradley–Terry difference
r(y₁) − r(y₂) the β log Z cancels, which is DPO. Here the DPO loss is minimised over tabular
logits on the population of all ordered pairs (y_i ≻ y_j weighted π_ref(y_i) π_ref(y_j)
σ(r_i − r_j)), by gradient descent with the library's own loss and autograd in float64; the
minimiser must equal π*, and β log π/π_ref must equal r up to one constant.
Chapter: stage 16.
"""

from __future__ import annotations

import numpy as np

from spiral.align.objectives import dpo_loss
from spiral.align.task import sigmoid
from spiral.autograd import Tensor
from spiral.nn import functional as F


def optimal_policy(pi_ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """π* = π_ref·exp(r/β)/Z, computed in log space."""
    logits = np.log(pi_ref) + np.asarray(reward, dtype=np.float64) / beta
    logits -= logits.max()
    p = np.exp(logits)
    return p / p.sum()


def log_partition(pi_ref: np.ndarray, reward: np.ndarray, beta: float) -> float:
    """log Z = log Σ π_ref(y) exp(r(y)/β)."""
    z = np.log(pi_ref) + np.asarray(reward, dtype=np.float64) / beta
    m = z.max()
    return float(m + np.log(np.exp(z - m).sum()))


def rlhf_objective(pi: np.ndarray, pi_ref: np.ndarray, reward: np.ndarray, beta: float) -> float:
    """J(π) = Σ π r − β Σ π log(π/π_ref)."""
    pi = np.asarray(pi, dtype=np.float64)
    nz = pi > 0
    return float(pi @ reward - beta * np.sum(pi[nz] * np.log(pi[nz] / pi_ref[nz])))


def population_pairs(pi_ref: np.ndarray, reward: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """All ordered pairs (i, j), i ≠ j, and weights π_ref(i)π_ref(j)·σ(r_i − r_j)."""
    n = len(pi_ref)
    i, j = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    keep = i != j
    i, j = i[keep], j[keep]
    return i, j, pi_ref[i] * pi_ref[j] * sigmoid(reward[i] - reward[j])


def fit_dpo(pi_ref: np.ndarray, reward: np.ndarray, beta: float, tol: float = 1e-12,
            max_steps: int = 200_000) -> tuple[np.ndarray, int]:
    """Minimise the population DPO loss over tabular logits; returns (π, steps taken).

    The step size is 1/L with L = β²/4 · λ_max of the pair-weight Laplacian, the loss's
    curvature bound in logit space, so plain gradient descent converges monotonically.
    """
    pi_ref = np.asarray(pi_ref, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    i, j, w = population_pairs(pi_ref, reward)
    n = len(pi_ref)
    lap = np.zeros((n, n))
    for a, b, wt in zip(i, j, w / w.sum(), strict=True):
        lap[a, a] += wt
        lap[b, b] += wt
        lap[a, b] -= wt
        lap[b, a] -= wt
    lr = 1.0 / (beta ** 2 / 4.0 * float(np.linalg.eigvalsh(lap).max()))
    ref_logp = np.log(pi_ref)
    theta = Tensor(ref_logp.copy(), requires_grad=True)  # start at the reference
    steps = 0
    while steps < max_steps:
        steps += 1
        logp = F.log_softmax(theta, dim=-1)
        loss = dpo_loss(logp[i], logp[j], ref_logp[i], ref_logp[j], beta, weights=w)
        theta.grad = None
        loss.backward()
        g = np.asarray(theta.grad)
        if float(np.abs(g).max()) < tol:
            break
        theta = Tensor(theta.data - lr * g, requires_grad=True)
    p = np.exp(theta.data - theta.data.max())
    return p / p.sum(), steps


def implicit_reward(pi: np.ndarray, pi_ref: np.ndarray, beta: float) -> np.ndarray:
    """β log π/π_ref (equal to r − β log Z at the optimum)."""
    return beta * (np.log(pi) - np.log(pi_ref))
