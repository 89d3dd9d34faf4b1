"""The claims stage 6 derives, each checked numerically (chapter: training stability).

Tolerances come from sampling error: a variance estimated from N independent squares of a
Gaussian has relative standard error √(2/N); the checks below allow about 5 of those.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.nn import BatchNorm1d, LayerNorm, Linear, init
from spiral.nn import functional as F

pytestmark = pytest.mark.stage6


def test_variance_through_a_linear_layer() -> None:
    """Var(y_i) = fan_in · Var(W) · Var(x) for y = Wx with independent zero-mean W and x."""
    rng = np.random.default_rng(0)
    for fan_in, var_w, var_x in ((64, 0.01, 1.0), (256, 1.0 / 256, 4.0), (32, 0.5, 0.25)):
        n = 20_000  # independent (W, x) pairs: W is redrawn too, the derivation averages over it
        w = rng.normal(0, math.sqrt(var_w), (n, fan_in))
        x = rng.normal(0, math.sqrt(var_x), (n, fan_in))
        y = (w * x).sum(1)  # one output unit per pair
        predicted = fan_in * var_w * var_x
        assert y.var() == pytest.approx(predicted, rel=5 * math.sqrt(2 / n) * 1.2)
        # it needs only zero means and independence, not Gaussians: uniform W and ±1 inputs
        w = rng.uniform(-1, 1, (n, fan_in)) * math.sqrt(3 * var_w)
        x = rng.choice([-1.0, 1.0], (n, fan_in)) * math.sqrt(var_x)
        assert ((w * x).sum(1)).var() == pytest.approx(predicted, rel=0.05)


def test_variance_uses_the_second_moment_when_inputs_are_not_centred() -> None:
    """With E[x] ≠ 0 the rule reads Var(y) = fan_in · Var(W) · E[x²] (ReLU outputs are ≥ 0)."""
    rng = np.random.default_rng(1)
    fan_in, n = 128, 20_000
    w = rng.normal(0, 1 / math.sqrt(fan_in), (n, fan_in))
    x = np.maximum(rng.standard_normal((n, fan_in)), 0)  # E[x²] = 1/2, Var(x) = 1/2 − 1/(2π)
    y = (w * x).sum(1)
    assert y.var() == pytest.approx(fan_in * (1 / fan_in) * 0.5, rel=0.05)
    assert abs(y.var() - (0.5 - 1 / (2 * math.pi))) > 0.1


def test_uniform_with_bound_sqrt3_std_has_that_std() -> None:
    """U(−a, a) has variance a²/3, so the uniform forms use a = √3 · std."""
    rng = np.random.default_rng(2)
    a = 0.7
    u = rng.uniform(-a, a, 400_000)
    assert u.var() == pytest.approx(a * a / 3, rel=0.01)


def _relu_stack_second_moments(var_w_times_fan_in: float, depth: int, width: int,
                               rng: np.random.Generator) -> np.ndarray:
    h = rng.standard_normal((512, width))
    moments = [np.mean(h * h)]
    for _ in range(depth):
        w = rng.normal(0, math.sqrt(var_w_times_fan_in / width), (width, width))
        h = np.maximum(h @ w.T, 0)
        moments.append(np.mean(h * h))
    return np.array(moments)


def test_relu_halves_the_second_moment() -> None:
    """E[relu(z)²] = Var(z)/2 for symmetric zero-mean z."""
    z = np.random.default_rng(3).standard_normal(1_000_000) * 1.7
    assert np.mean(np.maximum(z, 0) ** 2) == pytest.approx(1.7**2 / 2, rel=0.01)


def test_kaiming_preserves_the_second_moment_through_relu_layers() -> None:
    """Var(W) = 2/fan_in keeps E[h²] constant through 30 ReLU layers; 1/fan_in halves it per
    layer (2⁻³⁰ ≈ 1e-9 after 30), and the spiral.nn.init function draws the Kaiming law."""
    rng = np.random.default_rng(4)
    depth, width = 30, 256
    kaiming = _relu_stack_second_moments(2.0, depth, width, rng)
    lecun = _relu_stack_second_moments(1.0, depth, width, rng)
    # per-layer ratio: the derivation says 1 and 1/2; finite width adds a small random walk
    assert 0.5 < kaiming[-1] / kaiming[1] < 2.0
    assert np.log2(lecun[-1] / lecun[1]) == pytest.approx(-(depth - 1), abs=2.5)
    # the library function: one layer of kaiming_normal_(relu) from a unit input
    w = init.kaiming_normal_(np.zeros((width, width)), nonlinearity="relu",
                             generator=np.random.default_rng(5))
    x = np.maximum(np.random.default_rng(6).standard_normal((4096, width)), 0) * math.sqrt(2)
    assert np.mean(np.maximum(x @ w.T, 0) ** 2) == pytest.approx(np.mean(x * x), rel=0.1)


def test_xavier_keeps_forward_and_backward_variance_when_fans_match() -> None:
    """Var(W) = 2/(fan_in + fan_out) equals 1/fan_in and 1/fan_out when they agree; otherwise it
    lies between them, the harmonic-mean compromise."""
    for fan_in, fan_out in ((100, 100), (100, 400), (400, 100)):
        w = init.xavier_normal_(np.zeros((fan_out, fan_in)), generator=np.random.default_rng(7))
        v = 2 / (fan_in + fan_out)
        assert w.var() == pytest.approx(v, rel=0.05)
        assert min(1 / fan_in, 1 / fan_out) <= v <= max(1 / fan_in, 1 / fan_out)


def test_initial_loss_of_a_well_initialized_classifier_is_log_v() -> None:
    """Zero logits give cross-entropy log V exactly; a softmax layer scaled towards zero gets
    close to it, and torch's default-size weights on O(1) features start higher."""
    rng = np.random.default_rng(8)
    vocab, d, batch = 27, 200, 4096
    targets = rng.integers(0, vocab, batch)
    zero = F.cross_entropy(Tensor(np.zeros((batch, vocab))), targets)
    assert float(zero.item()) == pytest.approx(math.log(vocab), abs=1e-12)
    h = np.tanh(rng.standard_normal((batch, d)) * 2)  # saturated-ish hidden features
    head = Linear(d, vocab, rng=rng, dtype=np.float64)
    h_t = Tensor(h)
    loss_default = float(F.cross_entropy(head(h_t), targets).item())
    head.weight.data *= 0.01
    head.bias.data[...] = 0
    loss_small = float(F.cross_entropy(head(h_t), targets).item())
    assert loss_small == pytest.approx(math.log(vocab), abs=0.01)
    assert loss_default > math.log(vocab) + 0.05
    big = Linear(d, vocab, rng=rng, dtype=np.float64)
    init.normal_(big.weight, 0.0, 1.0, generator=rng)  # N(0, 1): logits of sd ~ √d · 0.8
    assert float(F.cross_entropy(big(h_t), targets).item()) > 3 * math.log(vocab)


def test_normalization_uses_the_biased_variance() -> None:
    """LayerNorm and BatchNorm divide by n, not n − 1: the normalized values have mean square
    exactly 1 (up to eps). BatchNorm's running_var stores the *unbiased* estimate."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 5)) * 3 + 2  # small n, where n vs n − 1 is a 25 % difference
    y = LayerNorm(5, eps=0.0, dtype=np.float64)(Tensor(x)).data
    np.testing.assert_allclose(np.mean(y * y, axis=-1), 1.0, rtol=1e-12)
    assert not np.allclose(np.var(y, axis=-1, ddof=1), 1.0, rtol=0.1)
    bn = BatchNorm1d(5, eps=0.0, momentum=1.0, dtype=np.float64)
    yb = bn(Tensor(x)).data
    np.testing.assert_allclose(np.mean(yb * yb, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.var(x, axis=0, ddof=1), rtol=1e-12)


def test_batchnorm_train_eval_gap_vanishes_when_running_stats_converge() -> None:
    """In eval mode BatchNorm is the affine map with the running statistics. After a few steps
    (momentum 0.1) those are still near their initial (0, 1) and eval output is far from the
    data normalized by its own statistics; after many steps the EMA has converged, with
    residual noise sd ≈ σ·√(m/((2 − m)·B)) ≈ 0.014σ at m = 0.1, B = 256."""
    rng = np.random.default_rng(10)
    data = rng.standard_normal((20_000, 3)) * np.array([1.0, 5.0, 0.2]) + np.array([3, -1, 0])
    target = (data[:512] - data.mean(0)) / data.std(0)  # population-normalized probe
    bn = BatchNorm1d(3, dtype=np.float64)
    probe = Tensor(data[:512])
    for i in range(3):
        bn(Tensor(data[i * 256:(i + 1) * 256]))
    early_gap = np.abs(bn.eval()(probe).data - target).mean()
    bn.train()
    for _ in range(300):
        j = rng.integers(0, len(data) - 256)
        bn(Tensor(data[j:j + 256]))
    late_gap = np.abs(bn.eval()(probe).data - target).mean()
    assert early_gap > 0.5 and late_gap < 0.05, (early_gap, late_gap)


def test_batchnorm_over_time_leaks_future_tokens_layernorm_does_not() -> None:
    """A causal model's output at position t must not depend on tokens after t. Put a
    BatchNorm over all (batch × time) positions of per-token features and it does (in train
    mode, through μ_B and σ_B); in eval mode, and with LayerNorm, it does not."""
    rng = np.random.default_rng(11)
    vocab, d, batch, t_len = 10, 6, 4, 8
    table = rng.standard_normal((vocab, d))
    x = rng.integers(0, vocab, (batch, t_len))
    x_future = x.copy()
    x_future[:, 1:] = (x[:, 1:] + 1 + rng.integers(0, vocab - 1, (batch, t_len - 1))) % vocab

    def first_position(norm: BatchNorm1d | LayerNorm, ids: np.ndarray) -> np.ndarray:
        h = Tensor(table[ids].reshape(batch * t_len, d))  # per-token features, causal so far
        return norm(h).data.reshape(batch, t_len, d)[:, 0]  # position 0 sees only token 0

    bn = BatchNorm1d(d, dtype=np.float64)
    leak = np.abs(first_position(bn, x) - first_position(bn, x_future)).max()
    assert leak > 1e-2  # the future changed the past
    bn.eval()
    np.testing.assert_array_equal(first_position(bn, x), first_position(bn, x_future))
    ln = LayerNorm(d, dtype=np.float64)
    np.testing.assert_array_equal(first_position(ln, x), first_position(ln, x_future))


def test_tanh_q_map_has_a_stable_nonzero_fixed_point_for_every_gain_above_one() -> None:
    """q ← g² E[tanh(√q x)²]: for g > 1 a unique stable fixed point q* > 0; for g ≤ 1, q → 0.

    The map is increasing and concave in q with slope g² · E[tanh'(0)²] = g² at 0, so it
    crosses the diagonal once when g > 1 and never (except at 0) when g ≤ 1.
    """
    from spiral.experiments.stability.mean_field import fixed_point, gauss, predict

    def q_map(q: float, g: float) -> float:
        return g * g * gauss(lambda z: np.tanh(z) ** 2, q)

    for g in (1.1, 4 / 3, 5 / 3, 2.0, 3.0):
        q = fixed_point(g * g)
        assert q > 1e-3 and q_map(q, g) == pytest.approx(q, rel=1e-9)
        slope = (q_map(q * 1.001, g) - q_map(q * 0.999, g)) / (0.002 * q)
        assert 0 < slope < 1  # stable: perturbations shrink
        assert fixed_point(g * g, q0=50.0) == pytest.approx(q, rel=1e-6)  # unique: from above too
        chi = predict("tanh", g * g, 1, q_input=q / (g * g))["chi"][0]
        assert chi > 1  # the fixed point is chaotic: the backward pass grows
    assert fixed_point(0.9, iters=20_000) < 1e-3


def test_mean_field_matches_a_wide_tanh_network() -> None:
    """The predicted std of h_l and the backward gain agree with a 512-wide random network."""
    from spiral.experiments.stability.mean_field import predict

    rng = np.random.default_rng(0)
    n, depth = 512, 6
    for g2 in (1.0, (5 / 3) ** 2, 16.0):
        h = rng.standard_normal((128, n))
        ws = [rng.normal(0, math.sqrt(g2 / n), (n, n)) for _ in range(depth)]
        zs = []
        for w in ws:
            zs.append(h @ w.T)
            h = np.tanh(zs[-1])
        mf = predict("tanh", g2, depth)
        assert h.std() == pytest.approx(mf["std_last"], rel=0.03)
        # backward: E[δ_l²] = χ_l E[δ_{l+1}²]; push a random δ from the top to layer 1
        delta = rng.standard_normal(h.shape) * (1 - h ** 2)
        top = float(np.mean(delta ** 2))
        for w, z in zip(ws[:0:-1], zs[-2::-1]):
            delta = (delta @ w) * (1 - np.tanh(z) ** 2)
        predicted = float(np.prod(mf["chi"][:-1]))
        assert np.mean(delta ** 2) / top == pytest.approx(predicted, rel=0.1)


def _linear_bn_loss(scale: float, rng_seed: int = 0) -> tuple[Linear, float]:
    """Linear(bias) → BatchNorm1d (train mode) → fixed random readout, weights scaled."""
    rng = np.random.default_rng(rng_seed)
    lin = Linear(8, 6, rng=np.random.default_rng(1), dtype=np.float64)
    lin.weight.data *= scale
    bn = BatchNorm1d(6, eps=0.0, dtype=np.float64)
    x = Tensor(rng.standard_normal((32, 8)))
    r = Tensor(np.random.default_rng(2).standard_normal((32, 6)))
    loss = (bn(lin(x)) * r).sum()
    loss.backward()
    return lin, float(loss.data)


def test_bias_before_batchnorm_gets_no_gradient() -> None:
    """BN(Wx + c) = BN(Wx): the bias's gradient Σ_b ∂L/∂z_b is the all-ones projection, 0."""
    lin, _ = _linear_bn_loss(1.0)
    assert np.abs(lin.bias.grad).max() < 1e-12 * max(1.0, np.abs(lin.weight.grad).max())
    assert np.abs(lin.weight.grad).max() > 1e-3  # the weights do learn


def test_batchnorm_makes_weight_gradients_scale_inversely() -> None:
    """L(aW) = L(W) under BatchNorm, so ∇L(aW) = ∇L(W)/a, and the gradient is ⟂ W."""
    lin1, loss1 = _linear_bn_loss(1.0)
    lin3, loss3 = _linear_bn_loss(3.0)
    assert loss3 == pytest.approx(loss1, rel=1e-10)
    np.testing.assert_allclose(lin3.weight.grad, lin1.weight.grad / 3.0, rtol=1e-8, atol=1e-12)
    assert abs(np.sum(lin1.weight.grad * lin1.weight.data)) < 1e-10
