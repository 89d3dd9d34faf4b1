"""The claims stage 5 derives, checked numerically (one test per claim, named for the book)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.optim import SGD, Adam, AdamW

pytestmark = pytest.mark.stage5


def _spd(rng: np.random.Generator, lams: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((len(lams), len(lams))))
    return (q * lams) @ q.T


def _gd(a: np.ndarray, theta0: np.ndarray, lr: float, steps: int, **kw: float) -> np.ndarray:
    p = Tensor(theta0.copy(), requires_grad=True)
    opt = SGD([p], lr=lr, **kw)
    path = [p.data.copy()]
    for _ in range(steps):
        p.grad = a @ p.data
        opt.step()
        path.append(p.data.copy())
    return np.asarray(path)


def test_gd_quadratic_contracts_by_max_abs_one_minus_eta_lambda(rng) -> None:
    """‖θₜ₊₁‖ ≤ maxᵢ|1 − ηλᵢ| ‖θₜ‖ at every step, with equality in the limit."""
    lams = np.geomspace(1.0, 20.0, 8)
    a = _spd(rng, lams)
    for lr in (0.01, 0.05, 2 / (lams[0] + lams[-1]), 0.095):
        rho = float(np.max(np.abs(1 - lr * lams)))
        path = _gd(a, rng.standard_normal(8), lr, 3000)
        norms = np.linalg.norm(path, axis=1)
        assert np.all(norms[1:] <= rho * norms[:-1] * (1 + 1e-12))
        assert norms[-1] / norms[-2] == pytest.approx(rho, rel=1e-3)


def test_optimal_step_gives_kappa_rate(rng) -> None:
    """η* = 2/(λ₁ + λₙ) minimises maxᵢ|1 − ηλᵢ| and gives (κ − 1)/(κ + 1)."""
    lams = np.array([0.5, 1.0, 3.0, 12.5])
    kappa = lams[-1] / lams[0]
    etas = np.linspace(1e-3, 2 / lams[-1], 4001)
    rhos = np.max(np.abs(1 - np.outer(etas, lams)), axis=1)
    eta_star = 2 / (lams[0] + lams[-1])
    rho_star = float(np.max(np.abs(1 - eta_star * lams)))
    assert rho_star == pytest.approx((kappa - 1) / (kappa + 1), rel=1e-12)
    assert rhos.min() >= rho_star - 1e-12
    assert etas[np.argmin(rhos)] == pytest.approx(eta_star, rel=1e-3)


def test_gd_diverges_above_two_over_lambda_max(rng) -> None:
    lams = np.array([1.0, 4.0, 10.0])
    a = _spd(rng, lams)
    theta0 = rng.standard_normal(3)
    assert np.linalg.norm(_gd(a, theta0, 0.19, 300)[-1]) < 1e-6    # |1 − 1.9| = 0.9 < 1
    assert np.linalg.norm(_gd(a, theta0, 0.21, 300)[-1]) > 1e6     # |1 − 2.1| = 1.1 > 1


def test_heavy_ball_momentum_rate_is_sqrt_kappa(rng) -> None:
    """Polyak's tuning gives spectral radius (√κ − 1)/(√κ + 1) for the momentum iteration."""
    lams = np.geomspace(1.0, 400.0, 6)
    kappa = lams[-1] / lams[0]
    sq = math.sqrt(kappa)
    lr, mu = 4 / (math.sqrt(lams[-1]) + math.sqrt(lams[0])) ** 2, ((sq - 1) / (sq + 1)) ** 2
    # iteration on (θₜ, θₜ₋₁) for one eigenvalue λ: θₜ₊₁ = (1 + μ − ηλ)θₜ − μθₜ₋₁
    radius = max(max(abs(np.linalg.eigvals(np.array([[1 + mu - lr * lam, -mu], [1.0, 0.0]]))))
                 for lam in lams)
    assert radius == pytest.approx((sq - 1) / (sq + 1), rel=1e-6)
    # and spiral's SGD(momentum=μ) is that iteration: its error norm decays at that rate
    path = _gd(_spd(rng, lams), rng.standard_normal(6), lr, 600, momentum=mu)
    norms = np.linalg.norm(path, axis=1)
    rate = math.exp(np.polyfit(np.arange(300, 601), np.log(norms[300:]), 1)[0])
    assert rate == pytest.approx((sq - 1) / (sq + 1), abs=0.01)


def test_sgd_momentum_is_heavy_ball(rng) -> None:
    """bₜ = μbₜ₋₁ + gₜ, θₜ = θₜ₋₁ − ηbₜ  ⇔  θₜ₊₁ = θₜ − ηgₜ + μ(θₜ − θₜ₋₁)."""
    a = _spd(rng, np.array([1.0, 3.0, 9.0]))
    theta0, lr, mu = rng.standard_normal(3), 0.05, 0.8
    ours = _gd(a, theta0, lr, 50, momentum=mu)
    prev, cur, hb = theta0.copy(), theta0.copy(), [theta0.copy()]
    for _ in range(50):
        nxt = cur - lr * (a @ cur) + mu * (cur - prev)
        prev, cur = cur, nxt
        hb.append(cur.copy())
    np.testing.assert_allclose(ours, np.asarray(hb), rtol=1e-12, atol=1e-14)


def test_nesterov_is_lookahead_form(rng) -> None:
    """PyTorch's Nesterov stores φ = θ + μv of Sutskever's look-ahead method, and its step is
    (1 + μ)bₜ − μbₜ₋₁ (not (1 + 2μ)bₜ − (1 + μ)bₜ₋₁)."""
    a = _spd(rng, np.array([0.5, 2.0, 8.0]))
    theta0, lr, mu = rng.standard_normal(3), 0.05, 0.9
    ours = _gd(a, theta0, lr, 60, momentum=mu, nesterov=True)
    theta, v = theta0.copy(), np.zeros(3)
    phis = [theta0.copy()]
    for _ in range(60):
        v = mu * v - lr * (a @ (theta + mu * v))       # gradient at the look-ahead point
        theta = theta + v
        phis.append(theta + mu * v)
    np.testing.assert_allclose(ours, np.asarray(phis), rtol=1e-10, atol=1e-12)
    # the step in buffer terms
    p = Tensor(theta0.copy(), requires_grad=True)
    opt = SGD([p], lr=lr, momentum=mu, nesterov=True)
    b_prev = np.zeros(3)
    for _ in range(5):
        before = p.data.copy()
        p.grad = a @ p.data
        opt.step()
        b = opt.state[id(p)]["momentum_buffer"].copy()
        np.testing.assert_allclose(before - p.data, lr * ((1 + mu) * b - mu * b_prev),
                                   rtol=1e-12, atol=1e-15)
        assert not np.allclose(before - p.data, lr * ((1 + 2 * mu) * b - (1 + mu) * b_prev))
        b_prev = b


def test_nonconvex_gd_reaches_stationary_point_at_rate(rng) -> None:
    """For L-smooth f and η = 1/L: minₜ<T ‖∇f(θₜ)‖² ≤ 2L (f(θ₀) − f*) / T."""
    alpha, n = 3.0, 20                                  # f = Σ xᵢ²/2 + α cos xᵢ, non-convex
    lip = 1 + alpha                                      # |f''| = |1 − α cos x| ≤ 1 + α
    grid = np.linspace(-6, 6, 200_001)
    f_star = n * float(np.min(grid**2 / 2 + alpha * np.cos(grid)))
    p = Tensor(rng.uniform(-0.5, 0.5, n), requires_grad=True)   # near the local max at 0
    opt = SGD([p], lr=1 / lip)
    f0 = float(np.sum(p.data**2 / 2 + alpha * np.cos(p.data)))
    best = math.inf
    for t in range(1, 201):
        g = p.data - alpha * np.sin(p.data)
        best = min(best, float(g @ g))
        assert best <= 2 * lip * (f0 - f_star) / t
        p.grad = g
        opt.step()
    assert best < 1e-6                                   # it does reach a stationary point


def test_bias_corrected_moments_are_unbiased() -> None:
    """For a stationary gradient, E[m̂ₜ] = E[g] and E[v̂ₜ] = E[g²] at every t; raw moments
    are shrunk by (1 − βᵗ). Checked on 200,000 independent coordinates of one Adam state."""
    rng = np.random.default_rng(5)
    n, mu, sigma, (b1, b2) = 200_000, 0.3, 1.5, (0.9, 0.999)
    p = Tensor(np.zeros(n), requires_grad=True)
    opt = Adam([p], lr=0.0, betas=(b1, b2))
    for t in range(1, 31):
        p.grad = rng.normal(mu, sigma, n)
        opt.step()
        s = opt.state[id(p)]
        m_hat, v_hat = s["exp_avg"] / (1 - b1**t), s["exp_avg_sq"] / (1 - b2**t)
        # standard errors of the means over coordinates: 5 of them allowed
        assert abs(m_hat.mean() - mu) < 5 * m_hat.std() / math.sqrt(n)
        assert abs(v_hat.mean() - (mu**2 + sigma**2)) < 5 * v_hat.std() / math.sqrt(n)
        assert s["exp_avg_sq"].mean() == pytest.approx((1 - b2**t) * (mu**2 + sigma**2), rel=0.02)
    assert s["exp_avg_sq"].mean() < 0.05 * (mu**2 + sigma**2)   # raw v is far too small at t=30


def test_adam_first_step_is_sign_times_lr() -> None:
    """With bias correction, Adam's first step is −η·g/(|g| + ε/…) ≈ −η sign(g) for any scale."""
    g = np.array([1e-6, -3.0, 250.0])
    p = Tensor(np.zeros(3), requires_grad=True)
    opt = Adam([p], lr=0.01)
    p.grad = g
    opt.step()
    np.testing.assert_allclose(p.data, -0.01 * np.sign(g), rtol=1e-2)


def test_v_hat_relative_variance_decreases_like_effective_sample_size() -> None:
    """For iid N(0, σ²) gradients, Var[v̂ₜ]/E[v̂ₜ]² = 2 Σᵢ wᵢ², wᵢ = (1 − β₂)β₂^(t−i)/(1 − β₂ᵗ):
    ≈ 2/t while t ≪ 1/(1 − β₂). This is the noisy denominator that warmup waits out."""
    rng = np.random.default_rng(11)
    n, b2 = 100_000, 0.999
    p = Tensor(np.zeros(n), requires_grad=True)
    opt = Adam([p], lr=0.0)
    for t in range(1, 51):
        p.grad = rng.normal(0.0, 2.0, n)
        opt.step()
        v_hat = opt.state[id(p)]["exp_avg_sq"] / (1 - b2**t)
        w = (1 - b2) * b2 ** np.arange(t) / (1 - b2**t)
        predicted = 2 * float(np.sum(w**2))
        assert v_hat.var() / v_hat.mean() ** 2 == pytest.approx(predicted, rel=0.05)
        assert predicted == pytest.approx(2 / t, rel=0.05)


def test_l2_is_not_weight_decay_under_adam() -> None:
    """SGD: L2 (gradient λθ) and decoupled decay are the same update. Adam: the L2 gradient is
    normalised away — with no loss gradient, λ has no effect on the path — whereas AdamW
    shrinks θ by exactly (1 − ηλ) per step."""
    theta0 = np.array([2.0, -1.5, 0.8])
    lr = 0.01
    # SGD with weight_decay λ == θ ← (1 − ηλ)θ − ηg
    p = Tensor(theta0.copy(), requires_grad=True)
    opt = SGD([p], lr=lr, weight_decay=0.1)
    for _ in range(10):
        p.grad = np.zeros(3)
        opt.step()
    np.testing.assert_allclose(p.data, (1 - lr * 0.1) ** 10 * theta0, rtol=1e-12)
    # Adam + L2: identical paths for λ = 1e-3 and λ = 10 (only eps tells them apart)
    paths = []
    for lam in (1e-3, 10.0):
        p = Tensor(theta0.copy(), requires_grad=True)
        opt = Adam([p], lr=lr, weight_decay=lam)
        for _ in range(50):
            p.grad = np.zeros(3)
            opt.step()
        paths.append(p.data.copy())
    np.testing.assert_allclose(paths[0], paths[1], rtol=1e-4)
    # ... and each coordinate moved about η per step toward 0, whatever its size or λ
    moved = np.abs(theta0 - paths[0])
    assert np.all(moved <= 50 * lr * (1 + 1e-9)) and np.all(moved > 0.85 * 50 * lr)
    # AdamW: geometric decay at rate (1 − ηλ), independent of the gradient history
    p = Tensor(theta0.copy(), requires_grad=True)
    opt = AdamW([p], lr=lr, weight_decay=0.5)
    for _ in range(50):
        p.grad = np.zeros(3)
        opt.step()
    np.testing.assert_allclose(p.data, (1 - lr * 0.5) ** 50 * theta0, rtol=1e-12)


def test_gd_on_a_strongly_convex_non_quadratic_loss_converges_linearly() -> None:
    """L(θ_t) − L* ≤ (1 − α/β)^t (L(θ_0) − L*) for η = 1/β, α-strongly convex, β-smooth L.

    L(x) = Σ log cosh(x_i) + (α/2)‖x‖²: its Hessian is diag(sech² x_i) + αI, between αI and
    (1 + α)I, so β = 1 + α; L* = 0 at x = 0.
    """
    rng = np.random.default_rng(3)
    for alpha in (0.01, 0.1, 1.0):
        beta = 1.0 + alpha
        x = rng.normal(0, 5, 20)

        def loss(v: np.ndarray, a: float = alpha) -> float:
            return float(np.sum(np.log(np.cosh(v))) + 0.5 * a * v @ v)

        gap0 = loss(x)
        for t in range(1, 200):
            x = x - (np.tanh(x) + alpha * x) / beta
            assert loss(x) <= (1 - alpha / beta) ** t * gap0 * (1 + 1e-12) + 1e-300, (alpha, t)
