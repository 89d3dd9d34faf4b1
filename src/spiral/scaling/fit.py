"""Fitting scaling laws the way Hoffmann et al. (2022, Approach 3, Appendix D.2) did.

The laws, in nats per token:

    L(N)    = E + A/N^α                     (one budget: loss against parameters)
    L(N, D) = E + A/N^α + B/D^β             (Chinchilla's form; Kaplan et al. 2020 fit
                                             other forms: do not attribute this one to them)

Positivity is built in by writing E = eᵉ, A = eᵃ, B = eᵇ, so the prediction's LOG is a
log-sum-exp, smooth in every parameter:

    log L̂(N, D) = LSE(a − α log N,  b − β log D,  e)

and the fit minimizes Σ_i Huber_δ(log L̂_i − log L_i) with δ = 10⁻³ (quadratic for residuals
below δ, linear above: robust to the odd diverged or under-trained run). The gradient of a
term is Huber'(r) · softmax(terms) · ∂term, written out in :func:`_loss`. Like Hoffmann et
al. we start L-BFGS (:mod:`spiral.scaling.lbfgs`) from a grid — α, β ∈ {0, 0.5, …, 2},
e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25} — but, to keep the fit to seconds on one core,
only from the ``n_starts`` grid points with the lowest loss (they ran every point), and keep
the best end point. Bootstrap intervals (Efron, 1979): refit on n points resampled with
replacement (starting from the full fit and the best grid points), percentiles of the refits.
Chapter: stage 14 (scaling laws).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from spiral.scaling.lbfgs import lbfgs

__all__ = ["ScalingFit", "fit_scaling_law", "HUBER_DELTA"]

HUBER_DELTA = 1e-3
_GRID = {"a": np.arange(0, 30, 5.0), "b": np.arange(0, 30, 5.0), "e": np.arange(-1, 1.5, 0.5),
         "alpha": np.arange(0, 2.5, 0.5), "beta": np.arange(0, 2.5, 0.5)}


def _terms(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray | None) -> np.ndarray:
    """(n, k) terms of the LSE; theta = (a, e, α) or (a, b, e, α, β)."""
    if logd is None:
        a, e, al = theta
        return np.stack([a - al * logn, np.full_like(logn, e)], axis=1)
    a, b, e, al, be = theta
    return np.stack([a - al * logn, b - be * logd, np.full_like(logn, e)], axis=1)


def _loss(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray | None, logl: np.ndarray,
          delta: float) -> tuple[float, np.ndarray]:
    """Σ Huber_δ(r)/δ and its gradient (dividing by δ rescales, the minimizer is the same)."""
    t = _terms(theta, logn, logd)
    top = t.max(axis=1, keepdims=True)
    w = np.exp(t - top)
    z = w.sum(axis=1, keepdims=True)
    r = (top + np.log(z))[:, 0] - logl  # log L̂ − log L
    w /= z  # ∂ LSE / ∂ term_j = softmax_j
    small = np.abs(r) <= delta
    f = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum() / delta
    dr = np.clip(r, -delta, delta) / delta  # Huber'(r) / δ
    gn = dr * w[:, 0]
    if logd is None:  # (a, e, α)
        grad = np.array([gn.sum(), (dr * w[:, 1]).sum(), -(gn * logn).sum()])
    else:  # (a, b, e, α, β)
        gd = dr * w[:, 1]
        grad = np.array([gn.sum(), gd.sum(), (dr * w[:, 2]).sum(), -(gn * logn).sum(),
                         -(gd * logd).sum()])
    return float(f), grad


def _grid(two_terms: bool) -> np.ndarray:
    names = ("a", "b", "e", "alpha", "beta") if two_terms else ("a", "e", "alpha")
    return np.array(list(itertools.product(*(_GRID[k] for k in names))), dtype=np.float64)


def _minimize(starts: np.ndarray, logn: np.ndarray, logd: np.ndarray | None,
              logl: np.ndarray, delta: float) -> np.ndarray:
    best, best_f = starts[0], np.inf
    for x0 in starts:
        r = lbfgs(lambda th: _loss(th, logn, logd, logl, delta), x0)
        if np.isfinite(r.fun) and r.fun < best_f:
            best, best_f = r.x, r.fun
    return best


def _natural(theta: np.ndarray) -> dict[str, float]:
    if len(theta) == 3:
        a, e, al = theta
        return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(al)}
    a, b, e, al, be = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(al),
            "B": float(np.exp(b)), "beta": float(be)}


@dataclass
class ScalingFit:
    """A fitted law: ``params`` (E, A, alpha[, B, beta]), bootstrap ``samples`` of them."""

    params: dict[str, float]
    theta: np.ndarray
    residuals: np.ndarray
    samples: list[dict[str, float]] = field(default_factory=list)

    def predict(self, n: np.ndarray | float, d: np.ndarray | float | None = None,
                params: dict[str, float] | None = None) -> np.ndarray:
        """L̂(N[, D]) with the fitted (or the given) parameters."""
        p = self.params if params is None else params
        out = p["E"] + p["A"] / np.asarray(n, dtype=np.float64) ** p["alpha"]
        if "B" in p:
            if d is None:
                raise ValueError("this law is L(N, D): pass the token count d as well")
            out = out + p["B"] / np.asarray(d, dtype=np.float64) ** p["beta"]
        return np.asarray(out)

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """The bootstrap percentile interval of one parameter."""
        if not self.samples:
            raise ValueError("no bootstrap samples: fit with n_bootstrap > 0")
        v = np.array([s[name] for s in self.samples])
        lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def predict_interval(self, n: float, d: float | None = None, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
        """A prediction interval for ONE new run: each bootstrap law's prediction times
        exp(a residual of the fit drawn at random), so the runs' own scatter is included."""
        if not self.samples:
            raise ValueError("no bootstrap samples: fit with n_bootstrap > 0")
        rng = np.random.default_rng(seed)
        preds = np.array([float(self.predict(n, d, s)) for s in self.samples])
        preds *= np.exp(rng.choice(self.residuals, size=len(preds)))
        lo, hi = np.quantile(preds, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)


def fit_scaling_law(n: np.ndarray, loss: np.ndarray, d: np.ndarray | None = None, *,
                    delta: float = HUBER_DELTA, n_starts: int = 10, n_bootstrap: int = 0,
                    seed: int = 0) -> ScalingFit:
    """Fit L(N) (``d`` None) or L(N, D) to losses (nats) of runs with N params and D tokens."""
    arrays = [np.asarray(v, dtype=np.float64) for v in ((n, loss) if d is None else (n, loss, d))]
    if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
        raise ValueError("n, loss (and d) must be 1-D arrays of the same length")
    if not all(np.all(np.isfinite(a) & (a > 0)) for a in arrays):
        raise ValueError("n, loss (and d) must be positive and finite")
    logn, logl = np.log(arrays[0]), np.log(arrays[1])
    logd = None if d is None else np.log(arrays[2])
    k = 3 if logd is None else 5
    if len(logn) < k + 1:
        raise ValueError(f"a {k}-parameter law needs at least {k + 1} runs, got {len(logn)}")
    grid = _grid(logd is not None)
    scores = np.array([_loss(g, logn, logd, logl, delta)[0] for g in grid])
    starts = grid[np.argsort(scores)[:n_starts]]
    theta = _minimize(starts, logn, logd, logl, delta)
    resid = logl - np.log(_natural_predict(theta, logn, logd))
    fit = ScalingFit(_natural(theta), theta, resid)
    rng = np.random.default_rng(seed)
    boot_starts = np.vstack([theta[None], starts[:2]])
    for _ in range(n_bootstrap):
        i = rng.integers(0, len(logn), len(logn))
        th = _minimize(boot_starts, logn[i], None if logd is None else logd[i], logl[i], delta)
        fit.samples.append(_natural(th))
    return fit


def _natural_predict(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray | None) -> np.ndarray:
    t = _terms(theta, logn, logd)
    return np.asarray(np.exp(t).sum(axis=1))
