"""Mean-field prediction of a deep plain network at initialization (stage 6).

For h_l = φ(z_l), z_l = W_l h_{l−1} with W_l entries N(0, σ_w²/n) and n wide layers, every
pre-activation z_l is (to leading order in 1/n) Gaussian with variance q_l, and

    q_{l+1} = σ_w² · E_{x~N(0,1)}[φ(√q_l x)²]              (the forward "q-map")
    χ_l     = σ_w² · E_{x~N(0,1)}[φ'(√q_l x)²]             (the backward gain per layer)

E[δ_l²] = χ_l · E[δ_{l+1}²] for the backpropagated δ_l = ∂L/∂z_l, and for independent inputs
‖∂L/∂W_l‖² ∝ E[δ_l²] · E[h_{l−1}²], so

    log₁₀ ‖∂L/∂W_1‖/‖∂L/∂W_L‖ = ½ [Σ_{l=1}^{L−1} log₁₀ χ_l + log₁₀ (E[h_0²] / E[h_{L−1}²])].

The Gaussian expectations are quadrature sums, so every number here is a deterministic
prediction, computed without drawing a single weight. Papers: Poole et al. (2016),
"Exponential expressivity in deep neural networks through transient chaos"; Schoenholz et
al. (2017), "Deep information propagation". Chapter: stage 6, "What the numbers obey".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# E over x ~ N(0, 1) as a midpoint sum on a fine grid: Gauss–Hermite nodes are too sparse for
# the sharp sech⁴ peak of tanh'(√q x)² when q is in the hundreds, and for ReLU's kink
_X = np.linspace(-10.0, 10.0, 20_000, endpoint=False) + 10.0 / 20_000
_W = np.exp(-0.5 * _X ** 2)
_W = _W / _W.sum()
SATURATION = 0.99  # |tanh| above this counts as saturated, as in the experiment


def _phi(act: str, z: np.ndarray) -> np.ndarray:
    if act == "tanh":
        return np.tanh(z)
    if act == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(f"unknown activation {act!r}: expected 'tanh' or 'relu'")


def gauss(f: Any, q: float) -> float:
    """E[f(√q x)] for x ~ N(0, 1), by a 20,000-point midpoint sum on [−10, 10]."""
    return float(np.dot(_W, f(math.sqrt(max(q, 0.0)) * _X)))


def fixed_point(gain2: float, act: str = "tanh", q0: float = 1.0, iters: int = 10_000) -> float:
    """The q* = σ_w² E[φ(√q* x)²] that iterating the q-map from q0 reaches."""
    q = q0
    for _ in range(iters):
        q_new = gain2 * gauss(lambda z: _phi(act, z) ** 2, q)
        if abs(q_new - q) <= 1e-15 * max(q, 1e-300):
            return q_new
        q = q_new
    return q


def predict(act: str, sigma_w2: float, depth: int, q_input: float = 1.0) -> dict[str, Any]:
    """Mean-field std, saturation and gradient ratio of a depth-layer plain net.

    ``q_input`` is E[h_0²] of the input; the first pre-activation has q_1 = σ_w² q_input.
    """
    e_h2 = [q_input]  # E[h_l²], l = 0..depth
    qs, chis, std = [], [], []
    q = sigma_w2 * q_input
    for _ in range(depth):
        h = _phi(act, math.sqrt(max(q, 0.0)) * _X)  # one evaluation serves all three moments
        dh = 1.0 - h ** 2 if act == "tanh" else (h > 0).astype(float)
        qs.append(q)
        chis.append(sigma_w2 * float(np.dot(_W, dh ** 2)))
        e_h2.append(float(np.dot(_W, h ** 2)))
        std.append(math.sqrt(max(e_h2[-1] - float(np.dot(_W, h)) ** 2, 0.0)))
        q = sigma_w2 * e_h2[-1]
    with np.errstate(divide="ignore"):
        log_grad = 0.5 * (float(np.sum(np.log10(chis[:-1])))
                          + math.log10(e_h2[0]) - math.log10(max(e_h2[depth - 1], 1e-300)))
    sat = math.erfc(math.atanh(SATURATION) / math.sqrt(2 * qs[-1])) if act == "tanh" else 0.0
    return {"q": qs, "chi": chis, "std": std, "std_last": std[-1],
            "saturated_last": sat, "log10_grad_ratio": log_grad}


def sigma_w2(scheme: str, width: int) -> float:
    """n · Var(W) of each init scheme of the experiment (square layers of ``width``)."""
    table = {"small": width * 0.01 ** 2, "large": float(width), "xavier": 1.0,
             "xavier_tanh_gain": (5 / 3) ** 2, "kaiming": 2.0}
    if scheme not in table:
        raise ValueError(f"unknown init scheme {scheme!r}: expected one of {sorted(table)}")
    return table[scheme]
