"""One table of Tensor ops drives three checks.

Every row is written once, with torch's API, as ``fn(m, *inputs)`` where ``m`` is the
module that provides ``cat``/``stack``/``where``/``tensor`` (``spiral.autograd`` or
``torch``), plus a NumPy reference. Each row is checked

1. forward against NumPy, in float64 and in float32 (and the float32 dtype is kept);
2. gradients against central finite differences in float64 (``gradcheck``, ~1e-6);
3. forward and gradients against PyTorch, on the very same ``fn``.

Shapes come from hypothesis (broadcasting included); values come from a NumPy generator
seeded by hypothesis, kept away from kinks (relu/abs at 0) and outside log/sqrt's domain
edges, so finite differences are meaningful.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spiral.autograd as ag
from spiral.autograd import Tensor, gradcheck

pytestmark = pytest.mark.stage2

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- shapes
def unary(min_dims: int = 0, max_dims: int = 3, min_side: int = 1) -> st.SearchStrategy:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=4).map(lambda s: [s])


def broadcast(n: int = 2, min_dims: int = 0) -> st.SearchStrategy:
    return hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims, max_dims=3,
                                             min_side=1, max_side=4).map(
        lambda r: list(r.input_shapes))


@st.composite
def matmul_shapes(draw: st.DrawFn) -> list[tuple[int, ...]]:
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    kind = draw(st.sampled_from(["dot", "vec-mat", "mat-vec", "batched", "batch-2d"]))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    b1, b2 = batch.input_shapes
    if kind == "dot":
        return [(k,), (k,)]
    if kind == "vec-mat":
        return [(k,), (*b2, k, m)]
    if kind == "mat-vec":
        return [(*b1, n, k), (k,)]
    if kind == "batch-2d":
        return [(draw(st.integers(1, 3)), n, k), (k, m)]
    return [(*b1, n, k), (*b2, k, m)]


@st.composite
def cat_shapes(draw: st.DrawFn) -> list[tuple[int, ...]]:
    rest = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    return [(draw(st.integers(1, 3)), *rest), (draw(st.integers(1, 3)), *rest)]


def same_shapes(n: int = 2, min_dims: int = 1) -> st.SearchStrategy:
    return hnp.array_shapes(min_dims=min_dims, max_dims=3, max_side=4).map(lambda s: [s] * n)


# --------------------------------------------------------------------------- values
def values(rng: np.random.Generator, shape: tuple[int, ...], domain: str) -> np.ndarray:
    z = rng.standard_normal(shape)
    if domain == "pos":  # log, sqrt, fractional powers
        return 0.3 + np.abs(z)
    if domain == "away":  # away from 0: relu/abs kinks, denominators
        return np.sign(z) * (0.3 + np.abs(z)) + (z == 0) * 0.3
    return z


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]  # fn(m, *inputs, *consts), torch's API
    ref: Callable[..., np.ndarray]  # ref(*arrays, *consts)
    shapes: st.SearchStrategy = field(default_factory=unary)
    domains: tuple[str, ...] = ("real",)
    consts: Callable[[np.random.Generator, list[tuple[int, ...]]], list[np.ndarray]] | None = None
    n_float: int | None = None  # float inputs come from the first n_float shapes (default all)

    def draw(self, data: st.DataObject) -> tuple[list[np.ndarray], list[np.ndarray]]:
        shapes = data.draw(self.shapes, label="shapes")
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        domains = self.domains * len(shapes) if len(self.domains) == 1 else self.domains
        xs = [values(rng, s, d) for s, d in zip(shapes[:self.n_float], domains)]
        consts = self.consts(rng, shapes) if self.consts else []
        return xs, consts


def _dup_rows(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    n = shapes[0][0]
    return [rng.integers(-n, n, size=(2, 3))]  # repeats and negative indices


def _dup_pairs(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    n, k = shapes[0][:2]
    return [rng.integers(0, n, size=5), rng.integers(-k, k, size=5)]


def _gather_index(width: int) -> Callable[..., list[np.ndarray]]:
    def make(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        n, k = shapes[0]
        return [rng.integers(0, k, size=(n, width))]

    return make


def _mask(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    return [rng.random(shapes[-1]) < 0.5]


def _split_sum(m: Any, a: Any) -> Any:
    pieces = a.split(1, 0)
    out = pieces[0]
    for i, p in enumerate(pieces[1:], start=2):
        out = out + p * i
    return out


def _np_split_sum(a: np.ndarray) -> np.ndarray:
    return sum(a[i:i + 1] * (i + 1) for i in range(a.shape[0]))


CASES = [
    # elementwise, unary
    Case("neg", lambda m, a: -a, lambda a: -a),
    Case("exp", lambda m, a: a.exp(), np.exp),
    Case("log", lambda m, a: a.log(), np.log, domains=("pos",)),
    Case("tanh", lambda m, a: a.tanh(), np.tanh),
    Case("sigmoid", lambda m, a: a.sigmoid(), lambda a: 1 / (1 + np.exp(-a))),
    Case("relu", lambda m, a: a.relu(), lambda a: np.maximum(a, 0), domains=("away",)),
    Case("sqrt", lambda m, a: a.sqrt(), np.sqrt, domains=("pos",)),
    Case("abs", lambda m, a: a.abs(), np.abs, domains=("away",)),
    Case("sin", lambda m, a: a.sin(), np.sin),
    Case("cos", lambda m, a: a.cos(), np.cos),
    Case("clamp", lambda m, a: a.clamp(-0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7)),
    Case("clamp_min", lambda m, a: a.clamp(min=0.1), lambda a: np.maximum(a, 0.1)),
    # with Python scalars (reflected too)
    Case("add_scalar", lambda m, a: 1.5 + a + 2, lambda a: a + 3.5),
    Case("rsub_scalar", lambda m, a: 2.0 - a - 1, lambda a: 1.0 - a),
    Case("mul_scalar", lambda m, a: 2.5 * a * 3, lambda a: a * 7.5),
    Case("div_scalar", lambda m, a: a / 4.0, lambda a: a / 4.0),
    Case("rdiv_scalar", lambda m, a: 3.0 / a, lambda a: 3.0 / a, domains=("away",)),
    Case("square", lambda m, a: a**2, lambda a: a * a),
    Case("cube", lambda m, a: a**3, lambda a: a * a * a),
    Case("pow_frac", lambda m, a: a**-1.5, lambda a: a**-1.5, domains=("pos",)),
    Case("rpow", lambda m, a: 2.0**a, lambda a: 2.0**a),
    Case("method_spellings", lambda m, a: a.pow(3).add(a.square()).mul(0.5).sub(a).div(2.0).neg(),
         lambda a: -((a**3 + a * a) * 0.5 - a) / 2.0),
    # binary with broadcasting
    Case("add", lambda m, a, b: a + b, np.add, broadcast()),
    Case("sub", lambda m, a, b: a - b, np.subtract, broadcast()),
    Case("mul", lambda m, a, b: a * b, np.multiply, broadcast()),
    Case("div", lambda m, a, b: a / b, np.divide, broadcast(), ("real", "away")),
    Case("pow", lambda m, a, b: a**b, np.power, broadcast(), ("pos", "real")),
    Case("matmul", lambda m, a, b: a @ b, np.matmul, matmul_shapes()),
    Case("diamond", lambda m, a, b: (a * b + a).tanh() * a, lambda a, b: np.tanh(a * b + a) * a,
         broadcast()),
    # reductions
    Case("sum", lambda m, a: a.sum(), np.sum),
    Case("sum_dim", lambda m, a: a.sum(-1), lambda a: a.sum(-1), unary(1)),
    Case("sum_keepdim", lambda m, a: a.sum(0, keepdim=True), lambda a: a.sum(0, keepdims=True),
         unary(1)),
    Case("sum_dims", lambda m, a: a.sum((0, -1)), lambda a: a.sum((0, -1)), unary(2)),
    Case("mean", lambda m, a: a.mean(), np.mean),
    Case("mean_dim", lambda m, a: a.mean(-1, keepdim=True), lambda a: a.mean(-1, keepdims=True),
         unary(1)),
    Case("var", lambda m, a: a.var(-1), lambda a: a.var(-1, ddof=1), unary(1, min_side=2)),
    Case("std", lambda m, a: a.std(-1, keepdim=True), lambda a: a.std(-1, ddof=1, keepdims=True),
         unary(1, min_side=2)),
    Case("var_biased", lambda m, a: a.var(0, correction=0, keepdim=True),
         lambda a: a.var(0, keepdims=True), unary(1)),
    Case("max_all", lambda m, a: a.max(), np.max),
    Case("max_dim", lambda m, a: a.max(-1)[0], lambda a: a.max(-1), unary(1)),
    Case("max_keepdim", lambda m, a: a.max(0, keepdim=True).values,
         lambda a: a.max(0, keepdims=True), unary(1)),
    Case("min_dim", lambda m, a: a.min(-1).values, lambda a: a.min(-1), unary(1)),
    # shapes
    Case("reshape", lambda m, a: a.reshape(-1), lambda a: a.reshape(-1)),
    Case("view", lambda m, a: a.view(*reversed(a.shape)), lambda a: a.reshape(a.shape[::-1]),
         unary(1)),
    Case("transpose", lambda m, a: a.transpose(0, -1), lambda a: a.swapaxes(0, -1), unary(1)),
    Case("permute", lambda m, a: a.permute(*reversed(range(a.ndim))), lambda a: a.transpose(),
         unary(1)),
    Case("T", lambda m, a: a.T * 1.0, lambda a: a.T, unary(2, 2)),
    Case("unsqueeze", lambda m, a: a.unsqueeze(1), lambda a: np.expand_dims(a, 1), unary(1)),
    Case("squeeze", lambda m, a: a.unsqueeze(0).squeeze(), np.squeeze),
    Case("flatten", lambda m, a: a.flatten(1), lambda a: a.reshape(a.shape[0], -1), unary(2)),
    Case("expand", lambda m, a: a.unsqueeze(0).expand(3, *a.shape),
         lambda a: np.broadcast_to(a, (3, *a.shape))),
    Case("contiguous", lambda m, a: a.transpose(0, -1).contiguous(),
         lambda a: a.swapaxes(0, -1), unary(1)),
    # indexing
    Case("index_int", lambda m, a: a[0], lambda a: a[0], unary(1)),
    Case("index_slice", lambda m, a: a[..., :2, None], lambda a: a[..., :2, None], unary(1)),
    Case("index_rows", lambda m, a, i: a[i], lambda a, i: a[i], unary(1), consts=_dup_rows),
    Case("index_pairs", lambda m, a, i, j: a[i, j], lambda a, i, j: a[i, j], unary(2),
         consts=_dup_pairs),
    Case("index_mask", lambda m, a, k: a[k], lambda a, k: a[k], consts=_mask),
    Case("gather", lambda m, a, i: a.gather(1, i), lambda a, i: np.take_along_axis(a, i, 1),
         unary(2, 2), consts=_gather_index(3)),
    Case("gather_one", lambda m, a, i: a.gather(-1, i), lambda a, i: np.take_along_axis(a, i, -1),
         unary(2, 2), consts=_gather_index(1)),
    Case("split", _split_sum, lambda a: _np_split_sum(a), unary(1)),
    # joining and selection
    Case("cat", lambda m, a, b: m.cat([a, b], 0), lambda a, b: np.concatenate([a, b], 0),
         cat_shapes()),
    Case("stack", lambda m, a, b: m.stack([a, b], -1), lambda a, b: np.stack([a, b], -1),
         same_shapes(2, 0)),
    Case("where", lambda m, a, b, c: m.where(c, a, b), lambda a, b, c: np.where(c, a, b),
         broadcast(3), consts=_mask, n_float=2),
    Case("where_scalar", lambda m, a, c: m.where(c, a, 0.5), lambda a, c: np.where(c, a, 0.5),
         broadcast(2), consts=_mask, n_float=1),
    Case("masked_fill", lambda m, a, c: a.masked_fill(c, -1.5),
         lambda a, c: np.where(c, -1.5, a), same_shapes(2, 0), consts=_mask, n_float=1),
]
IDS = [c.name for c in CASES]


def _wrap_consts(consts: list[np.ndarray]) -> list[Tensor]:
    return [ag.tensor(c) for c in consts]


def _assert_local_gradients_keep_dtype(out: Tensor, dtype: type) -> None:
    """Every node's local backward, fed a ``dtype`` gradient, returns ``dtype`` gradients."""
    stack, seen = [out], set()
    while stack:
        node = stack.pop()
        if id(node) in seen or node.is_leaf:
            continue
        seen.add(id(node))
        for pg in node._backward(np.ones(node.shape, dtype=dtype)):  # type: ignore[misc]
            if pg is not None:
                pg = pg.materialize() if hasattr(pg, "materialize") else pg
                assert pg.dtype == dtype, (node.grad_fn, pg.dtype)
        stack.extend(node._parents)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_forward_matches_numpy(case: Case, data: st.DataObject) -> None:
    xs, consts = case.draw(data)
    for dtype, rtol, atol in ((np.float64, 1e-12, 1e-12), (np.float32, 2e-5, 1e-6)):
        arrays = [x.astype(dtype) for x in xs]
        out = case.fn(ag, *[Tensor(a) for a in arrays], *_wrap_consts(consts))
        expected = np.asarray(case.ref(*arrays, *consts))
        assert out.dtype == expected.dtype == dtype, (out.dtype, expected.dtype)
        assert out.shape == expected.shape
        np.testing.assert_allclose(out.data, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=3, deadline=None, derandomize=True)
@given(data=st.data())
def test_float32_gradients_stay_float32(case: Case, data: st.DataObject) -> None:
    xs, consts = case.draw(data)
    inputs = [Tensor(x.astype(np.float32), requires_grad=True) for x in xs]
    _assert_local_gradients_keep_dtype(case.fn(ag, *inputs, *_wrap_consts(consts)), np.float32)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_gradients_match_finite_differences(case: Case, data: st.DataObject) -> None:
    xs, consts = case.draw(data)
    inputs = [Tensor(x, requires_grad=True) for x in xs]
    const_tensors = _wrap_consts(consts)
    assert gradcheck(lambda *ts: case.fn(ag, *ts, *const_tensors), inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_matches_torch(case: Case, data: st.DataObject) -> None:
    torch = pytest.importorskip("torch")
    xs, consts = case.draw(data)
    ours = [Tensor(x, requires_grad=True) for x in xs]
    theirs = [torch.tensor(x, requires_grad=True) for x in xs]
    out = case.fn(ag, *ours, *_wrap_consts(consts))
    ref = case.fn(torch, *theirs, *[torch.tensor(c) for c in consts])
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    cotangent = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(cotangent)
    ref.backward(torch.tensor(cotangent))
    for k, (a, b) in enumerate(zip(ours, theirs)):
        ga = np.zeros_like(a.data) if a.grad is None else a.grad
        gb = np.zeros_like(a.data) if b.grad is None else b.grad.numpy()
        np.testing.assert_allclose(ga, gb, rtol=1e-10, atol=1e-12, err_msg=f"input {k}")


# ----------------------------------------------------------- powers at domain edges
def test_powers_at_domain_edges_match_pytorch() -> None:
    """x**0 at x = 0 has gradient 0 (regression: 0·0⁻¹ gave nan), and every power's value and
    gradients at base 0 and at negative bases are PyTorch's (inf, 0 or nan, never an error)."""
    torch = pytest.importorskip("torch")
    a = np.array([0.0, 0.0, 0.0, 0.0, 2.0, -2.0, -2.0, -8.0, 0.5])
    b = np.array([0.0, 0.5, 2.0, -1.0, 0.0, 2.0, 0.0, 1 / 3, -2.0])

    def both(fn: Callable[..., Any], *arrays: np.ndarray) -> None:
        ours = [Tensor(x.copy(), requires_grad=True) for x in arrays]
        theirs = [torch.tensor(x, requires_grad=True) for x in arrays]
        with np.errstate(divide="ignore", invalid="ignore"):
            fn(*ours).sum().backward()
        fn(*theirs).sum().backward()
        for o, t in zip(ours, theirs):
            np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=1e-14, atol=0)

    both(lambda x, y: x**y, a, b)  # tensor exponent: both partials
    for p in (0, 0.5, 2, -1):  # scalar exponents, x**0 among them
        both(lambda x, p=p: x**p, a)
    for s in (0.0, -2.0, 2.0):  # scalar base: d(s^x)/dx at s = 0 and s < 0
        both(lambda x, s=s: s**x, b)
