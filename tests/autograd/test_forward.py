"""Forward mode: dual numbers against analytic derivatives, JVP/VJP and both Jacobians
against each other and PyTorch, and the operation counts that make their cost measurable."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd.forward import (
    Dual,
    jacobian_forward,
    jacobian_reverse,
    jvp,
    primal_cost,
    vjp,
)
from spiral.autograd.value import Value

pytestmark = pytest.mark.stage2

# name -> (dual op, f, analytic f', domain)
ANALYTIC = {
    "exp": (lambda d: d.exp(), math.exp, math.exp, (-3, 3)),
    "log": (lambda d: d.log(), math.log, lambda x: 1 / x, (0.1, 5)),
    "sin": (lambda d: d.sin(), math.sin, math.cos, (-4, 4)),
    "cos": (lambda d: d.cos(), math.cos, lambda x: -math.sin(x), (-4, 4)),
    "tanh": (lambda d: d.tanh(), math.tanh, lambda x: 1 / math.cosh(x) ** 2, (-3, 3)),
    "sigmoid": (
        lambda d: d.sigmoid(),
        lambda x: 1 / (1 + math.exp(-x)),
        lambda x: math.exp(-x) / (1 + math.exp(-x)) ** 2,
        (-5, 5),
    ),
    "relu": (lambda d: d.relu(), lambda x: max(x, 0.0), lambda x: float(x > 0), (-3, 3)),
    "square": (lambda d: d * d, lambda x: x * x, lambda x: 2 * x, (-3, 3)),
    "cube": (lambda d: d**3, lambda x: x**3, lambda x: 3 * x * x, (-3, 3)),
    "recip": (lambda d: 1.0 / d, lambda x: 1 / x, lambda x: -1 / x**2, (0.2, 3)),
    "quotient": (lambda d: d.sin() / d, lambda x: math.sin(x) / x,
                 lambda x: (x * math.cos(x) - math.sin(x)) / x**2, (0.2, 3)),
    "affine": (lambda d: 3.0 - 2.0 * d + 1.0, lambda x: 4.0 - 2 * x, lambda x: -2.0, (-3, 3)),
    "rsub_neg": (lambda d: -(1.0 - d) - d, lambda x: -1.0, lambda x: 0.0, (-3, 3)),
    "sub_div": (lambda d: (d - 2.0) / 4.0, lambda x: (x - 2) / 4, lambda x: 0.25, (-3, 3)),
}


@pytest.mark.parametrize("name", sorted(ANALYTIC))
def test_dual_tangent_is_the_analytic_derivative(name):
    op, f, df, (lo, hi) = ANALYTIC[name]
    rng = random.Random(name)
    for _ in range(25):
        x = rng.uniform(lo, hi)
        y = op(Dual(x, 1.0))
        assert y.primal == pytest.approx(f(x), rel=1e-12, abs=1e-12)
        assert y.tangent == pytest.approx(df(x), rel=1e-10, abs=1e-12)


def test_dual_binary_ops_are_the_product_and_quotient_rules():
    a, b = Dual(1.3, 0.7), Dual(-0.4, 2.0)
    assert (a * b).tangent == pytest.approx(0.7 * -0.4 + 1.3 * 2.0)
    assert (a / b).tangent == pytest.approx((0.7 * -0.4 - 1.3 * 2.0) / 0.16)
    assert (a - b).tangent == pytest.approx(0.7 - 2.0)
    assert (a + b).tangent == pytest.approx(2.7)


def mlp_program(n: int, m: int, hidden: int = 4, seed: int = 0):
    """f: ℝⁿ → ℝᵐ, f(x) = W₂ tanh(W₁x), written once for Dual and Value alike."""
    r = random.Random(seed)
    w1 = [[r.gauss(0, 1) for _ in range(n)] for _ in range(hidden)]
    w2 = [[r.gauss(0, 1) for _ in range(hidden)] for _ in range(m)]

    def dot(ws, xs):
        acc = xs[0] * ws[0]
        for w, x in zip(ws[1:], xs[1:]):
            acc = acc + x * w
        return acc

    def f(x):
        h = [dot(row, x).tanh() for row in w1]
        return [dot(row, h) for row in w2]

    return f, w1, w2


def test_forward_and_reverse_jacobians_agree_with_pytorch():
    torch = pytest.importorskip("torch")
    f, w1, w2 = mlp_program(5, 3)
    x = [0.3, -0.2, 0.9, 0.1, -0.5]
    jf, _ = jacobian_forward(f, x)
    jr, _ = jacobian_reverse(f, x)
    w1t, w2t = torch.tensor(w1, dtype=torch.float64), torch.tensor(w2, dtype=torch.float64)
    jt = torch.autograd.functional.jacobian(
        lambda z: w2t @ torch.tanh(w1t @ z), torch.tensor(x, dtype=torch.float64)
    )
    np.testing.assert_allclose(jf, jr, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jf, jt.numpy(), rtol=1e-12, atol=1e-14)


@settings(deadline=None, max_examples=25)
@given(
    st.lists(st.floats(-2, 2), min_size=4, max_size=4),
    st.lists(st.floats(-2, 2), min_size=4, max_size=4),
    st.lists(st.floats(-2, 2), min_size=2, max_size=2),
)
def test_jvp_and_vjp_are_products_with_the_jacobian(x, v, u):
    f, _, _ = mlp_program(4, 2, seed=3)
    jac, _ = jacobian_reverse(f, x)
    y1, jv = jvp(f, x, v)
    y2, uj = vjp(f, x, u)
    assert y1 == pytest.approx(y2, rel=1e-12)
    expected_jv = [sum(jac[i][j] * v[j] for j in range(4)) for i in range(2)]
    expected_uj = [sum(u[i] * jac[i][j] for i in range(2)) for j in range(4)]
    assert jv == pytest.approx(expected_jv, rel=1e-10, abs=1e-12)
    assert uj == pytest.approx(expected_uj, rel=1e-10, abs=1e-12)


def test_forward_mode_cost_is_n_passes_reverse_mode_one_recording():
    for n, m in [(2, 1), (8, 1), (8, 4), (1, 8)]:
        f, _, _ = mlp_program(n, m)
        x = [0.1 * i for i in range(n)]
        p = primal_cost(f, x)
        _, cf = jacobian_forward(f, x)
        _, cr = jacobian_reverse(f, x)
        assert cf.primal_ops == n * p  # one full evaluation per input direction
        assert cr.primal_ops == p  # the graph is recorded once
        # each backward pass costs at most one multiply-add per edge: ≤ 2 per binary op
        assert cr.derivative_ops <= m * 2 * p
        assert cf.derivative_ops <= n * 2 * p
        assert cf.total == cf.primal_ops + cf.derivative_ops


def test_dual_of_a_constant_tangent_is_zero():
    y = Dual(2.0) * 3.0 + 1.0
    assert (y.primal, y.tangent) == (7.0, 0.0)
    assert repr(Dual(1.0, 2.0)) == "Dual(1, 2)"


def test_dual_power_at_domain_edges_is_real_and_matches_value():
    # Regression: Dual(0.)**0.5 raised ZeroDivisionError; Dual(-8.)**(1/3) went complex.
    for a in (0.0, -2.0, -8.0, 3.0):
        for n in (0, 0.5, 1 / 3, 2, -1):
            d = Dual(a, 1.0) ** n
            v = Value(a)
            y = v**n
            y.backward()
            assert isinstance(d.primal, float) and isinstance(d.tangent, float), (a, n)
            for ours, ref in ((d.primal, y.data), (d.tangent, v.grad)):
                assert (math.isnan(ours) and math.isnan(ref)) or ours == ref, (a, n)
