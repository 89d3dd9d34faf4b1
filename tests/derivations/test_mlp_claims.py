"""The claims the stage-4 chapter derives, checked numerically (one test per claim)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.nn import Embedding, Linear
from spiral.nn import functional as F
from spiral.nn.activations import make_activation

pytestmark = pytest.mark.stage4


def test_one_hot_times_matrix_is_lookup() -> None:
    rng = np.random.default_rng(0)
    emb = Embedding(10, 4, rng=rng, dtype=np.float64)
    ids = np.array([3, 7, 3, 0])
    one_hot = np.eye(10)[ids]  # (4, 10)
    np.testing.assert_array_equal(emb(ids).data, one_hot @ emb.weight.data)
    # and the gradient of the product w.r.t. E is one_hotᵀ G: only used rows change
    g = rng.standard_normal((4, 4))
    emb(ids).backward(g)
    np.testing.assert_allclose(emb.weight.grad, one_hot.T @ g, atol=1e-15)
    unused = np.setdiff1d(np.arange(10), ids)
    assert np.all(emb.weight.grad[unused] == 0)


def test_softmax_is_the_maximum_entropy_distribution() -> None:
    # Among distributions p with E_p[z] equal to softmax(z/T)'s, softmax has the largest
    # entropy: every feasible perturbation (sum 0, orthogonal to z) lowers the entropy.
    rng = np.random.default_rng(1)
    z = rng.standard_normal(6)
    p = np.exp(z - z.max())
    p /= p.sum()
    ent = -(p * np.log(p)).sum()
    basis = np.stack([np.ones(6), z])  # the two constraints
    _, _, vt = np.linalg.svd(basis)
    null = vt[2:]  # directions d with Σd = 0 and z·d = 0
    for _ in range(200):
        d = rng.standard_normal(4) @ null
        q = p + 1e-2 * d / np.abs(d).max() * p.min()
        assert abs(q.sum() - 1) < 1e-12 and abs(q @ z - p @ z) < 1e-12
        assert -(q * np.log(q)).sum() < ent


def test_log_sum_exp_shift_is_exact_and_stable() -> None:
    z = np.array([1000.0, 999.0, 998.0])
    with np.errstate(over="ignore"):
        naive = np.log(np.exp(z).sum())
    assert not np.isfinite(naive)
    m = z.max()
    lse = m + np.log(np.exp(z - m).sum())
    assert lse == pytest.approx(1000.0 + math.log(1 + math.exp(-1) + math.exp(-2)), abs=1e-12)
    logp = F.log_softmax(Tensor(z[None]), dim=-1).data[0]
    np.testing.assert_allclose(logp, z - lse, atol=1e-12)
    small = z - 1000.0  # the same logits shifted: identical log-probabilities
    np.testing.assert_allclose(F.log_softmax(Tensor(small[None]), dim=-1).data[0], logp,
                               atol=1e-12)


def test_cross_entropy_is_the_mean_negative_log_likelihood() -> None:
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((50, 5))
    y = rng.integers(0, 5, 50)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    likelihood = np.prod(p[np.arange(50), y])
    ce = F.cross_entropy(Tensor(logits), y).item()
    assert ce == pytest.approx(-math.log(likelihood) / 50, rel=1e-10)


def test_minimising_cross_entropy_recovers_the_counts() -> None:
    # A free categorical model (logits θ, no context) trained by gradient descent on the
    # cross-entropy of a sample converges to the sample's frequencies: the MLE is counting.
    y = np.array([0, 0, 0, 1, 2, 2, 3, 0, 2, 0])
    theta = Tensor(np.zeros(4), requires_grad=True)
    for _ in range(3000):
        loss = F.cross_entropy(theta.reshape(1, 4).expand(len(y), 4), y)
        theta.grad = None
        loss.backward()
        theta.data -= 1.0 * theta.grad
    p = np.exp(theta.data) / np.exp(theta.data).sum()
    np.testing.assert_allclose(p, np.bincount(y, minlength=4) / len(y), atol=1e-6)


@pytest.mark.parametrize("name,derivative", [
    ("relu", lambda x: (x > 0).astype(float)),
    ("tanh", lambda x: 1 - np.tanh(x) ** 2),
    ("gelu", lambda x: 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
     + x * np.exp(-x**2 / 2) / math.sqrt(2 * math.pi)),
    ("silu", lambda x: (s := 1 / (1 + np.exp(-x))) * (1 + x * (1 - s))),
])
def test_activation_derivatives_match_the_formulas(name: str, derivative: object) -> None:
    x = np.linspace(-5, 5, 101) + 0.013  # avoid ReLU's kink at exactly 0
    t = Tensor(x, requires_grad=True)
    make_activation(name)(t).sum().backward()
    np.testing.assert_allclose(t.grad, derivative(x), atol=1e-10)  # type: ignore[operator]


def test_dead_relu_unit_gets_no_gradient() -> None:
    rng = np.random.default_rng(3)
    layer = Linear(4, 3, rng=rng, dtype=np.float64)
    layer.bias.data[1] = -100.0  # unit 1 is negative on every input below
    x = Tensor(rng.standard_normal((64, 4)))
    (layer(x).relu() ** 2).sum().backward()
    assert np.all(layer.weight.grad[1] == 0) and layer.bias.grad[1] == 0
    assert np.all(layer.weight.grad[[0, 2]] != 0)


def test_one_hidden_layer_relu_net_approximates_a_continuous_function() -> None:
    # Constructive universal approximation in 1-D: N ReLU units reproduce the piecewise-
    # linear interpolant of f on N knots, so the sup error of a smooth f falls like 1/N².
    f = np.sin
    xs = np.linspace(0, 2 * np.pi, 2001)
    errors = []
    for n in (8, 16, 32, 64):
        knots = np.linspace(0, 2 * np.pi, n + 1)
        slopes = np.diff(f(knots)) / np.diff(knots)
        w_out = np.concatenate([[slopes[0]], np.diff(slopes)])  # change of slope per knot
        hidden = np.maximum(0.0, xs[:, None] - knots[None, :-1])  # (X, n): ReLU(x - k_i)
        approx = f(knots[0]) + hidden @ w_out
        errors.append(np.abs(approx - f(xs)).max())
    assert all(a > b for a, b in zip(errors, errors[1:]))
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(3.5 < r < 4.5 for r in ratios), ratios  # halving the spacing quarters the error
