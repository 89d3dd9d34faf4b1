"""One test per claim that the stage-2 chapter derives (automatic differentiation)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from spiral.autograd.forward import Dual, jacobian_forward, jacobian_reverse, jvp, primal_cost, vjp
from spiral.autograd.value import MLP, Value, graph_size, value_sum

pytestmark = pytest.mark.stage2

# f, f', f'' at a point: the chapter derives f' from the limit definition, and the first
# remainder term of the difference quotient, (f(x+h) - f(x))/h - f'(x) = h·f''(x)/2 + O(h²).
LIMIT_CASES = {
    "x^2": (lambda x: x * x, lambda x: 2 * x, lambda x: 2.0, 1.3),
    "x^5": (lambda x: x**5, lambda x: 5 * x**4, lambda x: 20 * x**3, 0.8),
    "exp": (math.exp, math.exp, math.exp, 0.4),
    "log": (math.log, lambda x: 1 / x, lambda x: -1 / x**2, 1.7),
    "sin": (math.sin, math.cos, lambda x: -math.sin(x), 0.9),
}


@pytest.mark.parametrize("name", sorted(LIMIT_CASES))
def test_limit_definition_derivatives(name):
    f, df, d2f, x = LIMIT_CASES[name]
    for h in (1e-2, 1e-3, 1e-4):
        quotient = (f(x + h) - f(x)) / h
        # the quotient tends to f'(x) and its error is h·f''(x)/2 to first order
        assert (quotient - df(x)) / h == pytest.approx(d2f(x) / 2, rel=20 * h, abs=1e-6)


def test_x_squared_difference_quotient_is_exactly_2x_plus_h():
    x = 1.25
    for h in (0.5, 0.25, 0.125):  # powers of two: exact in floating point
        assert ((x + h) ** 2 - x**2) / h == 2 * x + h


def test_the_two_limits_behind_the_derivative_of_sin():
    for h in (1e-2, 1e-3, 1e-4):
        assert math.sin(h) / h == pytest.approx(1.0, abs=h * h)  # 1 - h²/6 + ...
        assert (math.cos(h) - 1) / h == pytest.approx(-h / 2, rel=h)  # → 0


def test_exp_derivative_limit_is_one_at_zero():
    for h in (1e-3, 1e-5, 1e-7):
        assert (math.exp(h) - 1) / h == pytest.approx(1.0, abs=h)


def test_power_rule_for_integer_n_via_the_binomial_theorem():
    x, h = 1.1, 1e-5
    for n in range(1, 8):
        quotient = ((x + h) ** n - x**n) / h
        assert quotient == pytest.approx(n * x ** (n - 1), rel=n * h * 10)


def central(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_product_rule():
    f, g = math.sin, math.exp
    for x in (-1.0, 0.3, 2.0):
        derivative = central(lambda t: f(t) * g(t), x)
        assert derivative == pytest.approx(math.cos(x) * g(x) + f(x) * g(x), rel=1e-8)


def test_quotient_rule():
    f, g = math.sin, lambda t: 2 + t * t
    for x in (-1.0, 0.3, 2.0):
        derivative = central(lambda t: f(t) / g(t), x)
        expected = (math.cos(x) * g(x) - f(x) * 2 * x) / g(x) ** 2
        assert derivative == pytest.approx(expected, rel=1e-8)


def test_chain_rule():
    # d/dx sin(x²) = cos(x²)·2x, and the engine agrees with the formula exactly
    for x in (-1.0, 0.3, 2.0):
        assert central(lambda t: math.sin(t * t), x) == pytest.approx(
            math.cos(x * x) * 2 * x, rel=1e-8
        )
        v = Value(x)
        (v * v).sin().backward()
        assert v.grad == pytest.approx(math.cos(x * x) * 2 * x, rel=1e-14)


def test_multivariable_chain_rule_multiplies_jacobians():
    rng = random.Random(0)
    a = [[rng.gauss(0, 1) for _ in range(3)] for _ in range(4)]

    def g(x):  # ℝ³ → ℝ⁴
        return [(x[0] * r[0] + x[1] * r[1] + x[2] * r[2]).tanh() for r in a]

    def f(u):  # ℝ⁴ → ℝ²
        return [u[0] * u[1] + u[2].sin(), u[3].exp() - u[0] * u[2]]

    x = [0.2, -0.7, 0.5]
    gx = [float(y.data) for y in g([Value(t) for t in x])]
    j_comp, _ = jacobian_reverse(lambda z: f(g(z)), x)
    j_f, _ = jacobian_reverse(f, gx)
    j_g, _ = jacobian_reverse(g, x)
    np.testing.assert_allclose(j_comp, np.array(j_f) @ np.array(j_g), rtol=1e-12, atol=1e-15)


def test_dual_numbers_carry_the_derivative():
    # f(a + bε) = f(a) + f'(a)·b·ε for a composite f
    a, b = 0.6, 2.5
    y = (Dual(a, b) * Dual(a, b)).sin().exp()
    assert y.primal == pytest.approx(math.exp(math.sin(a * a)))
    assert y.tangent == pytest.approx(y.primal * math.cos(a * a) * 2 * a * b, rel=1e-13)


def test_jvp_is_jacobian_times_vector_and_vjp_is_vector_times_jacobian():
    def f(x):
        return [x[0] * x[1].sin(), x[0].exp() + x[1] * x[2], (x[2] * x[2]).tanh()]

    x, v, u = [0.3, -1.1, 0.8], [1.0, -2.0, 0.5], [0.7, 0.1, -1.5]
    jac = np.array(jacobian_forward(f, x)[0])
    np.testing.assert_allclose(jvp(f, x, v)[1], jac @ np.array(v), rtol=1e-12)
    np.testing.assert_allclose(vjp(f, x, u)[1], np.array(u) @ jac, rtol=1e-12)


def test_reverse_mode_sums_the_products_of_local_derivatives_over_all_paths():
    x = Value(0.8)
    a, b = x.sin(), x * x
    c = a * b
    y = c + a.exp()

    def paths(node, target):  # enumerate every path node -> ... -> target explicitly
        if node is target:
            return 1.0
        return sum(d * paths(p, target) for p, d in zip(node._prev, node._local))

    y.backward()
    assert x.grad == pytest.approx(paths(y, x), rel=1e-14)


def quadratic_program(n: int, m: int):
    rng = random.Random(n * 1000 + m)
    w = [[rng.gauss(0, 1) for _ in range(n)] for _ in range(m)]

    def f(x):
        s = x[0] * x[0]
        for xi in x[1:]:
            s = s + xi * xi
        h = s.tanh()
        return [h * wi[0] + x[-1] * wi[-1] for wi in w]

    return f


def test_reverse_mode_gradient_cost_is_a_constant_multiple_of_f_for_any_n():
    ratios_reverse, ratios_forward = [], []
    for n in (1, 4, 16, 64):
        f = quadratic_program(n, 1)
        x = [0.1] * n
        p = primal_cost(f, x)
        ratios_reverse.append(jacobian_reverse(f, x)[1].total / p)
        ratios_forward.append(jacobian_forward(f, x)[1].total / p)
    assert max(ratios_reverse) <= 3.0  # cheap-gradient principle: a small constant, any n
    assert ratios_forward == pytest.approx([r * n for r, n in
                                            zip([ratios_forward[0]] * 4, (1, 4, 16, 64))],
                                           rel=0.35)  # grows like n


def test_forward_mode_wins_for_few_inputs_many_outputs():
    rng = random.Random(1)
    trunk = [[[rng.gauss(0, 0.5) for _ in range(2 if k == 0 else 4)] for _ in range(4)]
             for k in range(3)]
    heads = [(rng.gauss(0, 1), rng.randrange(4)) for _ in range(32)]

    def f(x):  # ℝ² → ℝ³²: a shared trunk of 3 tanh layers, then 32 cheap heads
        h = x
        for layer in trunk:
            h = [(h[0] * r[0] + h[1] * r[1] + (h[2] * r[2] + h[3] * r[3] if len(r) > 2 else 0.0))
                 .tanh() for r in layer]
        return [h[j] * w + 1.0 for w, j in heads]

    x = [0.3, 0.4]
    assert jacobian_forward(f, x)[1].total < jacobian_reverse(f, x)[1].total / 4
    g = quadratic_program(32, 1)  # and the other way round for ℝ³² → ℝ
    x = [0.1] * 32
    assert jacobian_reverse(g, x)[1].total < jacobian_forward(g, x)[1].total / 4


def test_stored_graph_grows_like_depth_times_width():
    def nodes(depth, width):  # graph nodes a training step must keep for the backward pass
        model = MLP(width, [width] * depth, rng=random.Random(0))
        return graph_size(value_sum(model([0.5] * width)))[0]

    # with width fixed, each extra layer adds the same number of stored nodes
    by_depth = [nodes(d, 4) for d in (1, 2, 3, 4)]
    assert len({b - a for a, b in zip(by_depth, by_depth[1:])}) == 1
    # and per layer, the stored nodes grow like width² (a width×width weight matrix)
    per_layer = [nodes(2, w) - nodes(1, w) for w in (2, 4, 8)]
    assert per_layer[2] / per_layer[1] == pytest.approx(4.0, rel=0.2)
