"""The scalar engine `Value`: every op against PyTorch and central differences (float64),
and the documented semantics of accumulation, shared nodes and repeated backward."""

from __future__ import annotations

import math
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd.value import MLP, Value, graph_size, topological_order, value_sum

pytestmark = pytest.mark.stage2

# name -> (Value op, torch op, math op, domain sampler)
UNARY = {
    "neg": (lambda v: -v, lambda t: -t, lambda x: -x, (-3.0, 3.0)),
    "exp": (lambda v: v.exp(), lambda t: t.exp(), math.exp, (-3.0, 3.0)),
    "log": (lambda v: v.log(), lambda t: t.log(), math.log, (0.1, 5.0)),
    "sin": (lambda v: v.sin(), lambda t: t.sin(), math.sin, (-4.0, 4.0)),
    "cos": (lambda v: v.cos(), lambda t: t.cos(), math.cos, (-4.0, 4.0)),
    "tanh": (lambda v: v.tanh(), lambda t: t.tanh(), math.tanh, (-3.0, 3.0)),
    "sigmoid": (
        lambda v: v.sigmoid(),
        lambda t: t.sigmoid(),
        lambda x: 1 / (1 + math.exp(-x)),
        (-6.0, 6.0),
    ),
    "relu": (lambda v: v.relu(), lambda t: t.relu(), lambda x: max(x, 0.0), (-3.0, 3.0)),
    "pow3": (lambda v: v**3, lambda t: t**3, lambda x: x**3, (-2.0, 2.0)),
    "pow_half": (lambda v: v**0.5, lambda t: t**0.5, math.sqrt, (0.2, 4.0)),
    "pow_neg": (lambda v: v**-2, lambda t: t**-2, lambda x: x**-2, (0.3, 3.0)),
    "rpow": (lambda v: 2.0**v, lambda t: 2.0**t, lambda x: 2.0**x, (-2.0, 2.0)),
    "add_const": (lambda v: v + 1.5, lambda t: t + 1.5, lambda x: x + 1.5, (-3.0, 3.0)),
    "radd_const": (lambda v: 1.5 + v, lambda t: 1.5 + t, lambda x: 1.5 + x, (-3.0, 3.0)),
    "sub_const": (lambda v: v - 1.5, lambda t: t - 1.5, lambda x: x - 1.5, (-3.0, 3.0)),
    "rsub_const": (lambda v: 1.5 - v, lambda t: 1.5 - t, lambda x: 1.5 - x, (-3.0, 3.0)),
    "mul_const": (lambda v: v * -2.5, lambda t: t * -2.5, lambda x: x * -2.5, (-3.0, 3.0)),
    "rmul_const": (lambda v: -2.5 * v, lambda t: -2.5 * t, lambda x: -2.5 * x, (-3.0, 3.0)),
    "div_const": (lambda v: v / 4.0, lambda t: t / 4.0, lambda x: x / 4.0, (-3.0, 3.0)),
    "rdiv_const": (lambda v: 3.0 / v, lambda t: 3.0 / t, lambda x: 3.0 / x, (0.3, 3.0)),
}

BINARY = {
    "add": (lambda a, b: a + b, (-3.0, 3.0), (-3.0, 3.0)),
    "sub": (lambda a, b: a - b, (-3.0, 3.0), (-3.0, 3.0)),
    "mul": (lambda a, b: a * b, (-3.0, 3.0), (-3.0, 3.0)),
    "div": (lambda a, b: a / b, (-3.0, 3.0), (0.3, 3.0)),
    "pow": (lambda a, b: a**b, (0.2, 3.0), (-2.0, 2.0)),
}


def central_difference(f, xs: list[float], i: int, h: float = 1e-6) -> float:
    up, down = list(xs), list(xs)
    up[i] += h
    down[i] -= h
    return (f(up) - f(down)) / (2 * h)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_forward_and_gradient_match_math_and_finite_differences(name):
    vop, _, mop, (lo, hi) = UNARY[name]
    rng = random.Random(name)
    for _ in range(20):
        x = rng.uniform(lo, hi)
        if name == "relu" and abs(x) < 1e-3:  # the kink is not differentiable
            continue
        v = Value(x)
        y = vop(v)
        y.backward()
        assert y.data == pytest.approx(mop(x), rel=1e-12, abs=1e-12)
        fd = central_difference(lambda z: mop(z[0]), [x], 0)
        assert v.grad == pytest.approx(fd, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_gradients_match_finite_differences(name):
    op, (lo_a, hi_a), (lo_b, hi_b) = BINARY[name]
    rng = random.Random(name)
    for _ in range(20):
        xs = [rng.uniform(lo_a, hi_a), rng.uniform(lo_b, hi_b)]
        a, b = Value(xs[0]), Value(xs[1])
        y = op(a, b)
        y.backward()
        assert y.data == pytest.approx(op(*xs), rel=1e-12)
        for i, leaf in enumerate((a, b)):
            fd = central_difference(lambda z: op(z[0], z[1]), xs, i)
            assert leaf.grad == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_every_op_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = random.Random(0)
    for name, (vop, top, _, (lo, hi)) in UNARY.items():
        for _ in range(5):
            x = rng.uniform(lo, hi)
            v, t = Value(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)
            yv, yt = vop(v), top(t)
            yv.backward()
            yt.backward()
            assert yv.data == pytest.approx(yt.item(), rel=1e-12, abs=1e-15), name
            assert v.grad == pytest.approx(t.grad.item(), rel=1e-12, abs=1e-15), name
    for name, (op, (lo_a, hi_a), (lo_b, hi_b)) in BINARY.items():
        xa, xb = rng.uniform(lo_a, hi_a), rng.uniform(lo_b, hi_b)
        a, b = Value(xa), Value(xb)
        ta = torch.tensor(xa, dtype=torch.float64, requires_grad=True)
        tb = torch.tensor(xb, dtype=torch.float64, requires_grad=True)
        y, yt = op(a, b), op(ta, tb)
        y.backward()
        yt.backward()
        assert y.data == pytest.approx(yt.item(), rel=1e-12), name
        assert (a.grad, b.grad) == pytest.approx((ta.grad.item(), tb.grad.item()), rel=1e-12)


def test_relu_derivative_at_zero_is_zero_like_pytorch():
    x = Value(0.0)
    x.relu().backward()
    assert x.grad == 0.0


def test_sigmoid_is_stable_for_large_inputs():
    for x in (-800.0, 800.0):
        v = Value(x)
        y = v.sigmoid()
        y.backward()
        assert 0.0 <= y.data <= 1.0 and v.grad == 0.0


def test_node_used_twice_receives_both_contributions():
    x = Value(3.0)
    y = x * x  # d/dx x² = 2x: the two edges to x both carry a gradient
    y.backward()
    assert x.grad == 6.0


def test_diamond_sums_paths_and_visits_shared_node_once():
    # x -> a = x², b = sin x -> y = a·b; dy/dx = 2x·sin x + x²·cos x
    x = Value(0.7)
    a, b = x * x, x.sin()
    y = a * b
    y.backward()
    expected = 2 * 0.7 * math.sin(0.7) + 0.49 * math.cos(0.7)
    assert x.grad == pytest.approx(expected, rel=1e-14)
    assert a.grad == pytest.approx(b.data) and b.grad == pytest.approx(a.data)


def test_deep_shared_chain_is_linear_not_exponential():
    # y = x·2^k via k doublings h = h + h: naive path counting would visit 2^k paths
    x = Value(1.0)
    h = x
    for _ in range(60):
        h = h + h
    h.backward()
    assert x.grad == 2.0**60
    assert graph_size(h) == (61, 120)


def test_repeated_backward_accumulates_on_leaves_only():
    x = Value(2.0)
    h = x.tanh()
    y = h * h
    y.backward()
    g1, h1 = x.grad, h.grad
    y.backward()
    assert x.grad == pytest.approx(2 * g1, rel=1e-15)  # leaves accumulate, like torch
    assert h.grad == h1  # interior nodes hold this call's gradient only
    x.grad = 0.0
    y.backward(gradient=3.0)
    assert x.grad == pytest.approx(3 * g1, rel=1e-15)


def test_repeated_backward_matches_pytorch_accumulation():
    torch = pytest.importorskip("torch")
    x = Value(0.3)
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    y, yt = (x * x.exp()).sin(), (t * t.exp()).sin()
    for _ in range(3):
        y.backward()
        yt.backward(retain_graph=True)
        assert x.grad == pytest.approx(t.grad.item(), rel=1e-13)


def test_backward_of_a_subgraph_does_not_corrupt_the_rest():
    x = Value(1.5)
    a = x.exp()
    y = a * 3.0
    a.backward()  # backward from an interior node
    assert x.grad == pytest.approx(math.exp(1.5))
    x.grad = 0.0
    y.backward()
    assert x.grad == pytest.approx(3 * math.exp(1.5))


def test_very_deep_graph_needs_no_recursion():
    x = Value(0.5)
    h = x
    for _ in range(3 * sys.getrecursionlimit()):
        h = h * 1.0 + 0.0
    h.backward()
    assert x.grad == 1.0


def test_topological_order_puts_parents_first():
    x, w = Value(1.0), Value(2.0)
    y = (x * w + x).tanh()
    order = topological_order(y)
    position = {id(v): i for i, v in enumerate(order)}
    assert len(order) == 5
    for v in order:
        for p in v._prev:
            assert position[id(p)] < position[id(v)]


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3),
    st.lists(st.sampled_from(["exp", "sin", "cos", "tanh", "sigmoid", "neg"]), min_size=1,
             max_size=5),
)
def test_random_compositions_match_pytorch(xs, ops):
    torch = pytest.importorskip("torch")
    vs = [Value(x) for x in xs]
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]

    def program(a, b, c, unary):
        h = a * b + c
        for name in ops:
            h = unary(name, h)
            if name == "exp":  # keep a chain of exps from overflowing
                h = unary("tanh", h)
        return h * a - b / (1.5 + c * c)

    y = program(*vs, lambda n, h: UNARY[n][0](h))
    yt = program(*ts, lambda n, h: UNARY[n][1](h))
    y.backward()
    yt.backward()
    assert y.data == pytest.approx(yt.item(), rel=1e-12, abs=1e-12)
    for v, t in zip(vs, ts):
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-10, abs=1e-12)


def test_mlp_gradients_match_pytorch_and_micrograd_order():
    torch = pytest.importorskip("torch")
    model = MLP(3, [4, 4, 1], rng=random.Random(1))
    x = [0.5, -1.2, 0.3]
    y = model(x)[0]
    loss = (y - 1.0) ** 2
    loss.backward()
    params = [torch.tensor(p.data, dtype=torch.float64, requires_grad=True)
              for p in model.parameters()]
    # rebuild the same network in torch from the flat parameter list
    h = [torch.tensor(v, dtype=torch.float64) for v in x]
    k = 0
    for i, layer in enumerate(model.layers):
        out = []
        for _ in layer:
            n_in = len(h)
            w, b = params[k:k + n_in], params[k + n_in]
            k += n_in + 1
            act = b + sum(wi * hi for wi, hi in zip(w, h))
            out.append(act.relu() if i < len(model.layers) - 1 else act)
        h = out
    loss_t = (h[0] - 1.0) ** 2
    loss_t.backward()
    assert loss.data == pytest.approx(loss_t.item(), rel=1e-12)
    for p, t in zip(model.parameters(), params):
        assert p.grad == pytest.approx(t.grad.item(), rel=1e-10, abs=1e-14)
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_value_sum_adds_left_to_right_without_an_extra_constant():
    xs = [Value(float(i)) for i in range(1, 5)]
    s = value_sum(xs)
    s.backward()
    assert s.data == 10.0 and all(x.grad == 1.0 for x in xs)
    assert graph_size(s) == (7, 6)


def test_graph_layout_points_every_edge_right_and_draws():
    from spiral.autograd.graph import draw_graph, layout

    x, w, b = Value(0.5), Value(-1.0), Value(0.2)
    y = (x * w + b).tanh() * x  # x is used twice, at different depths
    y.backward()
    pos = layout(y)
    assert set(pos) == set(topological_order(y))
    for v in pos:
        for p in v._prev:
            assert pos[p][0] < pos[v][0]  # parents strictly left of their consumers
    columns = {}
    for col, row in pos.values():
        columns.setdefault(col, []).append(row)
    assert all(len(rows) == len(set(rows)) for rows in columns.values())  # no overlaps
    fig = draw_graph(y, title="t")
    assert len(fig.axes[0].patches) == len(pos) + sum(len(v._prev) for v in pos)


def test_repeated_backward_on_micrograd_double_counts_interior_nodes():
    # the chapter's exercise 10: h = x·x, y = 3h at x = 1; dy/dx = 6 per call
    micrograd = pytest.importorskip("micrograd.engine")
    mx = micrograd.Value(1.0)
    my = (mx * mx) * 3
    x = Value(1.0)
    y = (x * x) * 3
    for _ in range(2):
        my.backward()
        y.backward()
    assert x.grad == 12.0  # 6 + 6: leaves accumulate, interior nodes are reset per call
    assert mx.grad == 18.0  # micrograd keeps h.grad = 3 from the first call and adds 3 more


# Powers at the edges of their domain: base 0, negative bases, exponent 0. The forward
# value and both partial derivatives must be PyTorch's (inf, 0 or nan), not an exception
# or a complex number. (Regression: Value(0.)**0.5 raised ZeroDivisionError, Value(0.)**Value(2.)
# raised "math domain error", Value(-8.)**(1/3) returned complex data.)
EDGE_BASES = [0.0, -0.0, 2.0, 0.5, -2.0, -8.0]
EDGE_EXPONENTS = [0.0, 1.0, 2.0, 3.0, 0.5, 1 / 3, -1.0, -2.0, -0.5]


def _same(ours: float, theirs: float) -> bool:
    return (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, rel=1e-12)


def test_powers_at_domain_edges_match_pytorch():
    torch = pytest.importorskip("torch")

    def leaf(x: float):
        return torch.tensor(x, dtype=torch.float64, requires_grad=True)

    for a in EDGE_BASES:
        for b in EDGE_EXPONENTS:
            # Value ** Value: both partials
            va, vb, ta, tb = Value(a), Value(b), leaf(a), leaf(b)
            vy, ty = va**vb, ta**tb
            vy.backward()
            ty.backward()
            got = (vy.data, va.grad, vb.grad)
            want = (ty.item(), ta.grad.item(), tb.grad.item())
            assert all(map(_same, got, want)), (a, b, got, want)
            # Value ** number (torch sends x**±0.5 to sqrt/rsqrt, which keep the sign of -0.0)
            if abs(b) == 0.5 and math.copysign(1.0, a) < 0 and a == 0:
                continue
            va, ta = Value(a), leaf(a)
            vy, ty = va**b, ta**b
            vy.backward()
            ty.backward()
            assert _same(vy.data, ty.item()) and _same(va.grad, ta.grad.item()), (a, b)
            # number ** Value
            vb, tb = Value(b), leaf(b)
            vy, ty = a**vb, a**tb
            vy.backward()
            ty.backward()
            assert _same(vy.data, ty.item()) and _same(vb.grad, tb.grad.item()), (a, b)


def test_division_log_and_exp_off_their_domains_match_pytorch():
    """Regression: Value(1.)/Value(0.) raised ZeroDivisionError, Value(0.).log() and
    Value(-1.).log() raised "math domain error", Value(1000.).exp() raised OverflowError;
    PyTorch gives ±inf / nan with the matching gradients."""
    torch = pytest.importorskip("torch")

    def leaf(x: float):
        return torch.tensor(x, dtype=torch.float64, requires_grad=True)

    for a, b in [(1.0, 0.0), (0.0, 0.0), (-1.0, 0.0), (1.0, -0.0), (2.0, 4.0)]:
        va, vb, ta, tb = Value(a), Value(b), leaf(a), leaf(b)
        vy, ty = va / vb, ta / tb
        vy.backward()
        ty.backward()
        got, want = (vy.data, va.grad, vb.grad), (ty.item(), ta.grad.item(), tb.grad.item())
        assert all(map(_same, got, want)), (a, b, got, want)
        # a Value over a number (x / b at x = a), and a number over a Value (a / x at x = b)
        for x, op in ((a, lambda z, b=b: z / b), (b, lambda z, a=a: a / z)):
            v, t = Value(x), leaf(x)
            vy, ty = op(v), op(t)
            vy.backward()
            ty.backward()
            assert _same(vy.data, ty.item()) and _same(v.grad, t.grad.item()), (a, b, x)
    for x, op in [(0.0, "log"), (-0.0, "log"), (-1.0, "log"), (1000.0, "exp"), (-1000.0, "exp")]:
        v, t = Value(x), leaf(x)
        vy, ty = getattr(v, op)(), getattr(t, op)()
        vy.backward()
        ty.backward()
        assert _same(vy.data, ty.item()) and _same(v.grad, t.grad.item()), (op, x)
