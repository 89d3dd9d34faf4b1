"""L-BFGS in NumPy: the quasi-Newton minimizer Hoffmann et al. (2022) fitted their law with.

Newton's step is d = −H⁻¹ g. L-BFGS (Nocedal, 1980; Liu & Nocedal, 1989) never forms H: it
keeps the last m pairs s_k = x_{k+1} − x_k, y_k = g_{k+1} − g_k (the curvature seen along
s_k, y_k ≈ H s_k) and applies the BFGS inverse-Hessian update to g by the two-loop recursion

    q ← g;  for k newest → oldest:  ρ_k = 1/(y_kᵀ s_k),  α_k = ρ_k s_kᵀ q,  q ← q − α_k y_k
    r ← γ q with γ = s_newᵀ y_new / y_newᵀ y_new   (the scale of H⁻¹ along the newest pair)
    for k oldest → newest:  β = ρ_k y_kᵀ r,  r ← r + s_k (α_k − β)
    d = −r

then backtracks the step t ∈ {1, ½, ¼, ...} until Armijo's sufficient decrease
f(x + t d) ≤ f(x) + c₁ t gᵀd holds. A pair with yᵀs ≤ 0 (no positive curvature; the Huber
loss has kinks) is skipped so that the implied H⁻¹ stays positive definite.
We write it here so that the core library needs NumPy only; a test checks that it reaches
the same minimum as ``scipy.optimize.minimize(method="L-BFGS-B")`` on the scaling-law loss.
Chapter: stage 14 (fitting scaling laws).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LBFGSResult", "lbfgs"]

FunGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class LBFGSResult:
    x: np.ndarray
    fun: float
    n_iter: int
    converged: bool


def _direction(g: np.ndarray, pairs: deque[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        alphas.append(a)
        q -= a * y
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        q += s * (a - rho * float(y @ q))
    return -q


def lbfgs(fun_grad: FunGrad, x0: np.ndarray, *, memory: int = 10, max_iter: int = 1000,
          gtol: float = 1e-10, ftol: float = 1e-14, c1: float = 1e-4) -> LBFGSResult:
    """Minimize f from x0; ``fun_grad(x)`` returns (f(x), ∇f(x)).

    Stops when max |g| < gtol, when a step lowers f by less than ftol·max(1, |f|), or when
    no backtracked step decreases f (a kink or the floating-point floor).

    >>> r = lbfgs(lambda x: (float(((x - 3) ** 2).sum()), 2 * (x - 3)), np.zeros(2))
    >>> np.round(r.x, 6).tolist(), r.converged
    ([3.0, 3.0], True)
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    f, g = fun_grad(x)
    pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=memory)
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g)) < gtol:
            return LBFGSResult(x, f, it - 1, True)
        d = _direction(g, pairs)
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            d, slope = -g, -float(g @ g)
        t = 1.0 if pairs else min(1.0, 1.0 / max(np.abs(g).sum(), 1e-300))
        for _ in range(60):
            f_new, g_new = fun_grad(x + t * d)
            if f_new <= f + c1 * t * slope:
                break
            t *= 0.5
        else:
            return LBFGSResult(x, f, it, True)  # no decrease is representable any more
        s, y = t * d, g_new - g
        if float(s @ y) > 1e-300:
            pairs.append((s, y, 1.0 / float(s @ y)))
        done = f - f_new <= ftol * max(1.0, abs(f))
        x, f, g = x + s, f_new, g_new
        if done:
            return LBFGSResult(x, f, it, True)
    return LBFGSResult(x, f, max_iter, False)
