"""gradcheck must pass correct gradients and catch wrong ones, naming the worst element."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spiral.autograd import (
    Function,
    FunctionCtx,
    GradcheckError,
    Tensor,
    gradcheck,
    gradcheck_directional,
)

pytestmark = pytest.mark.stage2


class WrongSquare(Function):
    """x² with a deliberately wrong backward on one element (index 2)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: np.ndarray) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        g = 2 * x * grad_output
        g.reshape(-1)[2] *= 1.01
        return (g,)


def test_gradcheck_passes_a_correct_gradient(rng: np.random.Generator) -> None:
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    assert gradcheck(lambda a, b: (a @ b).tanh(), [x, w])


def test_gradcheck_reports_the_worst_element(rng: np.random.Generator) -> None:
    x = Tensor(rng.standard_normal(4) + 3.0, requires_grad=True)
    with pytest.raises(GradcheckError, match=r"d out\(2,\) / d x\(2,\).*1 of 16 entries fail"):
        gradcheck(WrongSquare.apply, [x])


def test_gradcheck_requires_float64_and_restores_grad(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda a: a * 2, [Tensor(np.ones(2, dtype=np.float32), requires_grad=True)])
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    x.grad = np.full(3, 7.0)
    gradcheck(lambda a: a.exp(), [x])
    np.testing.assert_array_equal(x.grad, np.full(3, 7.0))


def _mlp_params(rng: np.random.Generator) -> list[Tensor]:
    shapes = [(4, 8), (8,), (8, 3), (3,)]
    return [Tensor(rng.standard_normal(s) * 0.5, requires_grad=True) for s in shapes]


def _mlp(x: Tensor, params: list[Tensor]) -> Tensor:
    w1, b1, w2, b2 = params
    return ((x @ w1 + b1).tanh() @ w2 + b2).sigmoid()


def test_directional_gradcheck_on_a_model(rng: np.random.Generator) -> None:
    x = Tensor(rng.standard_normal((5, 4)))
    params = _mlp_params(rng)
    assert gradcheck_directional(lambda *ps: (_mlp(x, list(ps)) ** 2).mean(), params)
    assert gradcheck_directional(lambda *ps: _mlp(x, list(ps)), params)  # non-scalar output


def test_directional_gradcheck_catches_a_wrong_gradient(rng: np.random.Generator) -> None:
    x = Tensor(rng.standard_normal(6) + 3.0, requires_grad=True)
    with pytest.raises(GradcheckError, match="directional"):
        gradcheck_directional(lambda t: WrongSquare.apply(t).sum(), [x], rtol=1e-6,
                              n_directions=5)
