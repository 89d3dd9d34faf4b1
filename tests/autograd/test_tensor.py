"""Tensor semantics beyond single ops: graphs, accumulation, grad mode, dtypes, errors, hooks."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import spiral.autograd as ag
from spiral.autograd import Tensor, cat, hooks, no_grad, stack, where

pytestmark = pytest.mark.stage2


def leaf(x: object, dtype: object = np.float64) -> Tensor:
    return Tensor(np.asarray(x, dtype=dtype), requires_grad=True)


# --------------------------------------------------------------------------- graphs
def test_diamond_graph_sums_both_paths() -> None:
    # y = a*b + a*c with b = c = x: dy/dx = 2a (both paths through the diamond)
    a, x = leaf(3.0), leaf(2.0)
    b, c = x * 1.0, x + 0.0
    y = a * b + a * c
    y.backward()
    assert x.grad == pytest.approx(6.0)
    assert a.grad == pytest.approx(4.0)


def test_reused_node_accumulates() -> None:
    x = leaf([1.0, -2.0, 3.0])
    y = x * x * x  # x used three times
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.data**2)


def test_deep_chain_has_no_recursion_limit() -> None:
    x = leaf(0.5)
    y = x
    for _ in range(5000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad == pytest.approx(1.0)


def test_parents_are_an_ordered_tuple() -> None:
    a, b = leaf(1.0), leaf(2.0)
    y = a - b
    assert y._parents == (a, b)
    assert y.grad_fn == "SubBackward" and not y.is_leaf and a.is_leaf


# --------------------------------------------------------------------------- accumulation
def test_grad_accumulates_across_backward_calls() -> None:
    x = leaf([1.0, 2.0])
    for _ in range(3):
        (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3 * 2 * x.data)


def test_second_backward_through_freed_graph_raises() -> None:
    x = leaf(2.0)
    y = x * x
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_retain_graph_allows_second_backward() -> None:
    x = leaf(2.0)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad == pytest.approx(8.0)


def test_only_leaves_keep_grad_unless_retained() -> None:
    x = leaf([1.0, 2.0])
    h = x * 2.0
    k = x * 3.0
    k.retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    np.testing.assert_allclose(k.grad, h.data)


def test_leaf_grads_are_private_copies() -> None:
    # a + b hands the same upstream array to both leaves; scaling one must not touch the other
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).backward(np.ones(2))
    a.grad *= 10
    np.testing.assert_allclose(b.grad, [1.0, 1.0])


def test_backward_with_gradient_argument() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((3, 4))
    v = np.random.default_rng(1).standard_normal((3, 4))
    ours = leaf(x)
    (ours.tanh() * 2).backward(v)
    theirs = torch.tensor(x, requires_grad=True)
    (theirs.tanh() * 2).backward(torch.tensor(v))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- grad mode
def test_no_grad_records_nothing() -> None:
    x = leaf([1.0, 2.0])
    with no_grad():
        y = (x * 2).exp()
        assert not ag.is_grad_enabled()
    assert ag.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_as_decorator_and_enable_grad_inside() -> None:
    x = leaf(1.0)

    @no_grad()
    def f(t: Tensor) -> tuple[Tensor, Tensor]:
        with ag.enable_grad():
            inner = t * 2
        return t * 2, inner

    outer, inner = f(x)
    assert not outer.requires_grad and inner.requires_grad


def test_detach_cuts_the_graph_and_shares_data() -> None:
    x = leaf([1.0, 2.0])
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, d.data)  # d is a constant: no second path


def test_requires_grad_false_inputs_get_no_grad() -> None:
    w = leaf(np.ones((3, 2)))
    x = Tensor(np.ones((4, 3)))
    (x @ w).sum().backward()
    assert x.grad is None and w.grad is not None


# --------------------------------------------------------------------------- dtypes
def test_default_dtypes_follow_torch() -> None:
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1, 2]).dtype == np.int64
    assert Tensor([True]).dtype == np.bool_
    assert Tensor(np.zeros(2)).dtype == np.float64  # an ndarray keeps its dtype
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("scalar", [2, 2.5, np.float64(2.5), True])
def test_python_and_numpy_scalars_keep_float32(scalar: object) -> None:
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    for y in (x * scalar, scalar * x, x + scalar, x - scalar, scalar - x, x / 2.0, x**2, 2.0**x):
        assert y.dtype == np.float32
    (x * scalar).sum().backward()
    assert x.grad.dtype == np.float32


def test_float32_stays_float32_through_ops_and_backward() -> None:
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    y = ((x @ w).tanh().sigmoid() * 0.5).mean(dim=-1).sum()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_mixed_float_dtypes_promote_and_grads_keep_input_dtype() -> None:
    a = Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    b = Tensor(np.ones(2, dtype=np.float64), requires_grad=True)
    y = a * b
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_integer_tensors_cannot_require_grad_but_index() -> None:
    with pytest.raises(RuntimeError, match="floating point"):
        Tensor([1, 2], requires_grad=True)
    table = leaf(np.arange(6.0).reshape(3, 2))
    rows = table[Tensor([2, 0, 2])]
    rows.sum().backward()
    np.testing.assert_allclose(table.grad, [[1, 1], [0, 0], [2, 2]])


def test_to_casts_and_casts_the_gradient_back() -> None:
    x = Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    assert not x.long().requires_grad


# --------------------------------------------------------------------------- misc API
def test_max_dim_returns_values_and_indices_like_torch() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((3, 5))
    values, indices = Tensor(x).max(dim=1)
    ref = torch.tensor(x).max(dim=1)
    np.testing.assert_array_equal(indices.data, ref.indices.numpy())
    np.testing.assert_allclose(values.data, ref.values.numpy())
    assert indices.dtype == np.int64
    assert Tensor(x).max().shape == ()


def test_max_all_splits_gradient_between_ties_like_torch() -> None:
    torch = pytest.importorskip("torch")
    x = np.array([1.0, 3.0, 3.0, 2.0])
    ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
    ours.max().backward()
    theirs.max().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy())


def test_embedding_lookup_backward_matches_add_at(rng: np.random.Generator) -> None:
    table = leaf(rng.standard_normal((7, 4)))
    idx = rng.integers(0, 7, size=(5, 6))
    out = table[Tensor(idx)]
    g = rng.standard_normal(out.shape)
    out.backward(g)
    expected = np.zeros((7, 4))
    np.add.at(expected, idx, g)
    np.testing.assert_allclose(table.grad, expected, rtol=1e-12)


def test_item_numpy_and_properties() -> None:
    x = Tensor([[1.0, 2.0]])
    assert x.shape == (1, 2) and x.ndim == 2 and x.size(1) == 2 and x.numel() == 2
    assert Tensor([3.5]).item() == 3.5
    with pytest.raises(RuntimeError, match="cannot be converted"):
        x.item()
    assert x.numpy() is x.data
    with pytest.raises(RuntimeError, match="detach"):
        leaf([1.0]).numpy()
    assert "requires_grad=True" in repr(leaf([1.0]))
    assert x.zero_() is x and not x.data.any()


def test_ndarray_on_the_left_defers_to_tensor() -> None:
    x = leaf([1.0, 2.0])
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 4.0])


def test_comparisons_return_bool_tensors_without_grad() -> None:
    x = leaf([1.0, -1.0])
    m = x > 0
    assert m.dtype == np.bool_ and not m.requires_grad
    y = where(m, x, x * 0.1)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 0.1])


def test_cat_stack_split_round_trip() -> None:
    x = leaf(np.arange(12.0).reshape(4, 3))
    parts = x.split([1, 3], dim=0)
    assert [p.shape for p in parts] == [(1, 3), (3, 3)]
    np.testing.assert_array_equal(cat(parts, 0).data, x.data)
    assert stack(list(x.chunk(2, 0)), 0).shape == (2, 2, 3)


# --------------------------------------------------------------------------- errors
def test_backward_errors_are_clear() -> None:
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).backward()
    with pytest.raises(RuntimeError, match="gradient has shape"):
        (x * 2).backward(np.ones(3))


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(TypeError):
        Tensor("abc")
    with pytest.raises(RuntimeError, match="in-place"):
        leaf([1.0])[0] = 2.0
    t = Tensor([1.0, 2.0])
    t[0] = 5.0
    assert t.data[0] == 5.0


# --------------------------------------------------------------------------- hooks
def test_allocation_hook_sees_alloc_and_free() -> None:
    events: list[tuple[str, int, int]] = []
    with hooks.register_allocation_hook(lambda e, n, i: events.append((e, n, i))):
        x = Tensor(np.ones((4, 4), dtype=np.float32))  # 64 bytes
        y = x * 2.0  # 64 new bytes
        v = y.reshape(16)  # a view: 0 new bytes
        del y, v
        gc.collect()
    allocs = [n for e, n, _ in events if e == "alloc"]
    assert allocs == [64, 64, 0]
    freed = {i for e, _, i in events if e == "free"}
    alloc_ids = [i for e, _, i in events if e == "alloc"]
    assert set(alloc_ids[1:]) <= freed and alloc_ids[0] not in freed
    del x
    n_events = len(events)
    Tensor(np.ones(3))  # hook removed: nothing more is recorded
    assert len(events) == n_events


SLICE_GRAPHS = [
    lambda x: x[0:2].sum() + x.sum(),
    lambda x: (x * 3).sum() + x[1:].sum() * 2,
    lambda x: (x[:, 0:2] * x[:, 2:4] + x[:, 4:6] + x[:, 0:2].exp()).sum(),
    lambda x: (x[0] * x[1] + x[:, 0].sum() + x[2] * x).sum(),
    lambda x: x[..., None][0].tanh().sum() + (x * x).sum(),
]


@pytest.mark.parametrize("k", range(len(SLICE_GRAPHS)))
def test_slice_gradients_accumulate_like_torch(k: int, rng: np.random.Generator) -> None:
    # basic indexing returns an unplaced slice gradient; the engine must combine it with
    # other slices and full gradients in every order, without touching shared arrays
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 6))
    ours, theirs = leaf(x), torch.tensor(x, requires_grad=True)
    SLICE_GRAPHS[k](ours).backward()
    SLICE_GRAPHS[k](theirs).backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_float16_tensors_keep_float16_through_backward() -> None:
    # room for stage 12: half precision works end to end (NumPy computes in float16)
    x = Tensor(np.array([0.1, 0.2, 0.3], dtype=np.float16), requires_grad=True)
    w = Tensor(np.ones((3, 2), dtype=np.float16), requires_grad=True)
    y = ((x @ w).tanh() * 2.0 + x.sum()).sigmoid().mean()
    assert y.dtype == np.float16
    y.backward()
    assert x.grad.dtype == np.float16 and w.grad.dtype == np.float16
    ref = Tensor(x.data.astype(np.float64), requires_grad=True)
    ((ref @ w.data.astype(np.float64)).tanh() * 2.0 + ref.sum()).sigmoid().mean().backward()
    np.testing.assert_allclose(x.grad, ref.grad, rtol=1e-2)


@pytest.mark.parametrize("name", ["tensor", "function", "gradcheck", "hooks"])
def test_docstring_examples_run(name: str) -> None:
    import doctest
    import importlib

    module = importlib.import_module(f"spiral.autograd.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_where_with_two_scalars_is_a_constant() -> None:
    out = where(Tensor([True, False]), 1.0, 0.0)
    assert isinstance(out, Tensor) and not out.requires_grad
    np.testing.assert_array_equal(out.data, [1.0, 0.0])


def test_integer_and_float_operands_promote_like_torch() -> None:
    torch = pytest.importorskip("torch")
    ints = np.array([[1, 2], [3, 4]])
    floats = np.ones((2, 2), dtype=np.float32)
    mask = np.array([[True, False], [False, True]])
    cases = [
        lambda m, i, f, k: i * f, lambda m, i, f, k: f - i, lambda m, i, f, k: k * f,
        lambda m, i, f, k: i * 2.5, lambda m, i, f, k: 1.5 - i, lambda m, i, f, k: i / 2,
        lambda m, i, f, k: i / i, lambda m, i, f, k: 3 / i, lambda m, i, f, k: i + 1,
        lambda m, i, f, k: i * i, lambda m, i, f, k: i.float() @ f, lambda m, i, f, k: i @ i,
    ]
    for fn in cases:
        ours = fn(ag, ag.tensor(ints), ag.tensor(floats), ag.tensor(mask))
        ref = fn(torch, torch.tensor(ints), torch.tensor(floats), torch.tensor(mask))
        assert str(ours.dtype) == str(ref.dtype).removeprefix("torch."), (ours.dtype, ref.dtype)
        np.testing.assert_allclose(ours.data, ref.numpy(), rtol=1e-6)


def test_any_all_and_repr_like_torch() -> None:
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, 0.0], [2.0, 3.0]])
    for fn in (lambda t: t.any(), lambda t: (t > 0).all(1), lambda t: (t > 0).any(0)):
        np.testing.assert_array_equal(fn(Tensor(x)).data, fn(torch.tensor(x)).numpy())
    assert "dtype" not in repr(Tensor([True])) and "dtype" not in repr(torch.tensor([True]))
    assert repr(Tensor([1, 2])) == repr(torch.tensor([1, 2]))
