"""One test per claim that the stage-3 chapter derives (backpropagation deep dive).

Every derived formula is checked against central finite differences in float64 (~1e-6) or
an exact identity; the chapter links to these tests by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from spiral.experiments.backprop.gradient_clipping import clip_grad_norm_
from spiral.nn import kernels as K

pytestmark = pytest.mark.stage3


def fd_jacobian(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of f: R^n -> R^m at x (flattened), shape (m, n)."""
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        e = e.reshape(x.shape)
        cols.append(((f(x + e) - f(x - e)) / (2 * h)).ravel())
    return np.stack(cols, axis=1)


def test_local_times_upstream_is_the_chain_rule():
    """∂L/∂x = J_gᵀ (J_fᵀ ∂L/∂f) for L = u·f(g(x)): upstream times local, layer by layer."""
    rng = np.random.default_rng(0)
    a, u, x = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal(3)
    g = lambda z: a @ z  # noqa: E731
    f = np.tanh
    upstream = u  # ∂L/∂f
    local_f = 1 - np.tanh(g(x)) ** 2  # diagonal Jacobian of tanh
    grad = a.T @ (local_f * upstream)
    np.testing.assert_allclose(grad, fd_jacobian(lambda z: u @ f(g(z)), x)[0], atol=1e-8)


def test_matmul_gradients_follow_the_transpose_pattern():
    """Y = X W, G = ∂L/∂Y: ∂L/∂X = G Wᵀ (N×in) and ∂L/∂W = Xᵀ G (in×out)."""
    rng = np.random.default_rng(1)
    x, w, g = rng.standard_normal((5, 3)), rng.standard_normal((3, 2)), rng.standard_normal((5, 2))
    loss_x = lambda z: np.sum(g * (z @ w))  # noqa: E731
    loss_w = lambda z: np.sum(g * (x @ z))  # noqa: E731
    dx, dw = g @ w.T, x.T @ g
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_allclose(dx.ravel(), fd_jacobian(loss_x, x)[0], atol=1e-8)
    np.testing.assert_allclose(dw.ravel(), fd_jacobian(loss_w, w)[0], atol=1e-8)


def test_bias_gradient_sums_over_the_broadcast_axis():
    """y = x + b with b broadcast over N rows: ∂L/∂b = Σ_rows G, not G."""
    rng = np.random.default_rng(2)
    x, b, g = rng.standard_normal((6, 3)), rng.standard_normal(3), rng.standard_normal((6, 3))
    fd = fd_jacobian(lambda z: np.sum(g * (x + z)), b)[0]
    np.testing.assert_allclose(g.sum(axis=0), fd, atol=1e-8)


def test_softmax_jacobian_is_diag_p_minus_outer():
    rng = np.random.default_rng(3)
    z = rng.standard_normal(6)
    p = K.softmax_forward(z)
    np.testing.assert_allclose(np.diag(p) - np.outer(p, p), fd_jacobian(K.softmax_forward, z),
                               atol=1e-9)


def test_softmax_jacobian_is_psd_with_null_direction_and_eigenvalues_at_most_half():
    rng = np.random.default_rng(4)
    for _ in range(100):
        p = K.softmax_forward(rng.standard_normal(7) * 3)
        jac = np.diag(p) - np.outer(p, p)
        ev = np.linalg.eigvalsh(jac)
        assert ev.min() > -1e-15 and ev.max() <= 0.5
        np.testing.assert_allclose(jac @ np.ones(7), 0.0, atol=1e-15)
        v = rng.standard_normal(7)  # vᵀ J v is the variance of v under p
        assert np.isclose(v @ jac @ v, p @ v**2 - (p @ v) ** 2)


def test_softmax_cross_entropy_gradient_is_p_minus_y():
    rng = np.random.default_rng(5)
    z = rng.standard_normal(5)
    t = 2
    loss = lambda s: -K.log_softmax_forward(s)[t]  # noqa: E731
    y = np.eye(5)[t]
    np.testing.assert_allclose(K.softmax_forward(z) - y, fd_jacobian(loss, z)[0], atol=1e-8)


def test_label_smoothing_gradient_is_p_minus_smoothed_target():
    rng = np.random.default_rng(6)
    z, eps, t = rng.standard_normal(5), 0.1, 3
    q = np.full(5, eps / 5)
    q[t] += 1 - eps
    loss = lambda s: -(q @ K.log_softmax_forward(s))  # noqa: E731
    np.testing.assert_allclose(K.softmax_forward(z) - q, fd_jacobian(loss, z)[0], atol=1e-8)


def test_log_softmax_backward_is_g_minus_p_sum_g():
    rng = np.random.default_rng(7)
    z, g = rng.standard_normal(6), rng.standard_normal(6)
    fd = fd_jacobian(lambda s: g @ K.log_softmax_forward(s), z)[0]
    np.testing.assert_allclose(g - K.softmax_forward(z) * g.sum(), fd, atol=1e-8)


def test_layer_norm_jacobian_couples_every_input():
    """∂x̂/∂x = (rstd/N)(N I − 1 1ᵀ − x̂ x̂ᵀ): dense, not diagonal — the statistics couple."""
    rng = np.random.default_rng(8)
    n = 6
    x = rng.standard_normal(n) * 2 + 1
    _, xhat, rstd = K.layer_norm_forward(x, 1, None, None, eps=0.0)
    jac = rstd * (n * np.eye(n) - np.ones((n, n)) - np.outer(xhat, xhat)) / n
    fd = fd_jacobian(lambda z: K.layer_norm_forward(z, 1, None, None, eps=0.0)[0], x)
    np.testing.assert_allclose(jac, fd, atol=1e-8)
    assert np.all(np.abs(jac[~np.eye(n, dtype=bool)]) > 0)  # every off-diagonal term non-zero


def test_layer_norm_input_gradient_has_zero_mean_and_is_orthogonal_to_xhat():
    rng = np.random.default_rng(9)
    x, g, w = rng.standard_normal((4, 8)), rng.standard_normal((4, 8)), rng.standard_normal(8)
    # eps = 0: with eps > 0, ‖x̂‖²/N = var/(var + eps) < 1 and orthogonality holds only nearly
    _, xhat, rstd = K.layer_norm_forward(x, 1, w, None, eps=0.0)
    dx = K.layer_norm_backward(g, xhat, rstd, w, 1, False)[0]
    np.testing.assert_allclose(dx.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose((dx * xhat).sum(axis=1), 0.0, atol=1e-10)


def test_layer_norm_full_backward_matches_finite_differences():
    rng = np.random.default_rng(10)
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    _, xhat, rstd = K.layer_norm_forward(x, 1, w, b)
    dx, dw, db = K.layer_norm_backward(g, xhat, rstd, w, 1, True)
    f = lambda z, ww=w, bb=b: np.sum(g * K.layer_norm_forward(z, 1, ww, bb)[0])  # noqa: E731
    np.testing.assert_allclose(dx.ravel(), fd_jacobian(f, x)[0], atol=1e-7)
    np.testing.assert_allclose(dw, fd_jacobian(lambda ww: f(x, ww), w)[0], atol=1e-7)
    np.testing.assert_allclose(db, fd_jacobian(lambda bb: f(x, w, bb), b)[0], atol=1e-7)


def test_attention_backward_through_softmax_and_scaled_scores():
    """dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = s dS K, dK = s dSᵀ Q, dV = Pᵀ dO."""
    rng = np.random.default_rng(11)
    q, k, v, g = (rng.standard_normal((4, 3)) for _ in range(4))
    s = 1 / np.sqrt(3)
    mask = K.causal_mask(4, 4, np.float64)
    _, p, _ = K.attention_forward(q, k, v, mask, s)
    dq, dk, dv = K.attention_backward(g, q, k, v, p, None, s)
    f = lambda a, b, c: np.sum(g * K.attention_forward(a, b, c, mask, s)[0])  # noqa: E731
    np.testing.assert_allclose(dq.ravel(), fd_jacobian(lambda z: f(z, k, v), q)[0], atol=1e-8)
    np.testing.assert_allclose(dk.ravel(), fd_jacobian(lambda z: f(q, z, v), k)[0], atol=1e-8)
    np.testing.assert_allclose(dv.ravel(), fd_jacobian(lambda z: f(q, k, z), v)[0], atol=1e-8)


def test_residual_jacobian_is_identity_plus_branch_and_can_shrink():
    """y = x + f(x): ∂y/∂x = I + J_f. Its smallest singular value can be < 1 (and even 0)."""
    rng = np.random.default_rng(12)
    w = rng.standard_normal((5, 5)) / np.sqrt(5)
    x = rng.standard_normal(5)
    f = lambda z: np.tanh(w @ z)  # noqa: E731
    jac = np.eye(5) + (1 - np.tanh(w @ x) ** 2)[:, None] * w
    np.testing.assert_allclose(jac, fd_jacobian(lambda z: z + f(z), x), atol=1e-8)
    assert np.linalg.svd(jac, compute_uv=False).min() < 1.0  # some direction shrinks
    # a branch with J_f = −I cancels the identity entirely: the highway can be closed
    assert np.allclose(np.eye(5) + (-np.eye(5)), 0.0)
    u = rng.standard_normal(5)
    assert np.linalg.norm(jac.T @ u) != pytest.approx(np.linalg.norm(u))  # not an isometry


def test_sigmoid_local_gradient_is_at_most_a_quarter():
    z = np.linspace(-20, 20, 100001)
    s = 1 / (1 + np.exp(-z))
    d = s * (1 - s)
    assert d.max() <= 0.25 and np.isclose(d.max(), 0.25)
    assert 0.25**20 < 1e-12  # 20 sigmoid layers with ‖W‖ <= 1 shrink a gradient below 1e-12


def test_gradient_clipping_preserves_direction_and_bounds_the_norm():
    rng = np.random.default_rng(13)
    grads = [rng.standard_normal((3, 4)) * 100, rng.standard_normal(7) * 100]
    before = np.concatenate([g.ravel() for g in grads])
    norm = clip_grad_norm_(grads, max_norm=1.0)
    after = np.concatenate([g.ravel() for g in grads])
    assert np.isclose(norm, np.linalg.norm(before))
    assert np.linalg.norm(after) <= 1.0 + 1e-9
    np.testing.assert_allclose(after / np.linalg.norm(after), before / np.linalg.norm(before))


def test_gelu_derivative_is_cdf_plus_x_pdf():
    x = np.linspace(-5, 5, 41)
    y, cdf = K.gelu_forward(x)
    fd = np.array([fd_jacobian(lambda z: K.gelu_forward(z)[0], np.array([v]))[0, 0] for v in x])
    np.testing.assert_allclose(K.gelu_backward(np.ones_like(x), x, cdf), fd, atol=1e-8)


def test_masked_attention_scores_get_exactly_zero_gradient():
    """Masked entries have P = 0 exactly, so dS = P ⊙ (...) is exactly 0 there."""
    rng = np.random.default_rng(14)
    q, k, v, g = (rng.standard_normal((5, 4)) for _ in range(4))
    mask = K.causal_mask(5, 5, np.float64)
    _, p, _ = K.attention_forward(q, k, v, mask, 0.5)
    ds = K.softmax_backward(g @ v.T, p, -1)
    above = np.triu(np.ones((5, 5), dtype=bool), k=1)
    assert np.all(p[above] == 0.0) and np.all(ds[above] == 0.0)
    assert np.all(np.isfinite(ds))
