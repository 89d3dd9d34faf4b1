"""The Function extension point: hand-derived backward passes as single graph nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spiral.autograd import Function, FunctionCtx, Tensor, gradcheck, no_grad

pytestmark = pytest.mark.stage2


class Softmax(Function):
    """softmax along ``dim``; backward: x̄ = y ⊙ (ȳ − Σ ȳ ⊙ y)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: np.ndarray, dim: int) -> np.ndarray:
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        y = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: np.ndarray) -> tuple[Any, ...]:
        (y,) = ctx.saved_tensors
        dot = (grad_output * y).sum(axis=ctx.dim, keepdims=True)
        return y * (grad_output - dot), None


class ScaledAdd(Function):
    """a + s * b: two tensor inputs around a non-tensor one."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: np.ndarray, s: float, b: np.ndarray) -> np.ndarray:
        ctx.s = s
        return a + s * b

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: np.ndarray) -> tuple[Any, ...]:
        return grad_output, None, ctx.s * grad_output


def composed_softmax(x: Tensor, dim: int) -> Tensor:
    e = (x - x.max(dim, keepdim=True).values.detach()).exp()
    return e / e.sum(dim, keepdim=True)


def test_fused_softmax_equals_composed_primitives(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 5))
    a, b = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
    ya, yb = Softmax.apply(a, -1), composed_softmax(b, -1)
    np.testing.assert_allclose(ya.data, yb.data, rtol=1e-12)
    assert ya.grad_fn == "SoftmaxBackward" and ya._parents == (a,)  # one node, not five
    g = rng.standard_normal(x.shape)
    ya.backward(g)
    yb.backward(g)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-14)


def test_function_gradcheck_with_non_tensor_argument(rng: np.random.Generator) -> None:
    a = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    assert gradcheck(lambda x, y: ScaledAdd.apply(x, 2.5, y).tanh(), [a, b])
    assert gradcheck(lambda x: Softmax.apply(x, 0), [a])


def test_function_matches_torch_softmax(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 6))
    g = rng.standard_normal((4, 6))
    ours = Tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    Softmax.apply(ours, 1).backward(g)
    torch.softmax(theirs, 1).backward(torch.tensor(g))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_needs_input_grad_and_no_graph_without_grad() -> None:
    seen: list[tuple[bool, ...]] = []

    class Probe(ScaledAdd):
        @staticmethod
        def forward(ctx: FunctionCtx, a: np.ndarray, s: float, b: np.ndarray) -> np.ndarray:
            seen.append(ctx.needs_input_grad)
            return ScaledAdd.forward(ctx, a, s, b)

    a, b = Tensor([1.0], requires_grad=True), Tensor([2.0])
    y = Probe.apply(a, 1.0, b)
    assert seen[-1] == (True, False, False) and y.requires_grad
    with no_grad():
        assert not Probe.apply(a, 1.0, b).requires_grad
    assert not Probe.apply(b, 1.0, b).requires_grad


def test_wrong_number_of_gradients_is_a_clear_error() -> None:
    class Bad(Function):
        @staticmethod
        def forward(ctx: FunctionCtx, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return a * b

        @staticmethod
        def backward(ctx: FunctionCtx, grad_output: np.ndarray) -> Any:
            return grad_output

    y = Bad.apply(Tensor([1.0], requires_grad=True), Tensor([2.0], requires_grad=True))
    with pytest.raises(RuntimeError, match="returned 1 gradients, expected 2"):
        y.sum().backward()


def test_wrong_gradient_shape_is_a_clear_error() -> None:
    class BadShape(Function):
        @staticmethod
        def forward(ctx: FunctionCtx, a: np.ndarray) -> np.ndarray:
            return a.sum()

        @staticmethod
        def backward(ctx: FunctionCtx, grad_output: np.ndarray) -> Any:
            return (grad_output,)  # forgot to broadcast back to a's shape

    with pytest.raises(RuntimeError, match=r"shape \(\) for input 0"):
        BadShape.apply(Tensor([1.0, 2.0], requires_grad=True)).backward()
