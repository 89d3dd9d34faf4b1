"""Random programs: the engine's bookkeeping (accumulation, slices, reuse) against torch.

Hypothesis writes a short straight-line program over two leaves; every statement applies
an op to earlier values, chosen by index, so diamonds, repeated use of one value, unused
branches and gradients that arrive as slices all occur. The same program runs on our
engine and on torch; the leaves' gradients must agree. Running ``backward`` twice with
``retain_graph=True`` must give exactly twice the gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spiral.autograd as ag
from spiral.autograd import Tensor

pytestmark = pytest.mark.stage2

# Every op maps values of shape (3, 4) to a value of shape (3, 4); `m` is the module.
UNARY: list[Callable[[Any, Any], Any]] = [
    lambda m, a: a.tanh(),
    lambda m, a: (a * 0.3).exp(),
    lambda m, a: a.sigmoid() - 0.5,
    lambda m, a: -a * 1.5,
    lambda m, a: (a**2) * 0.2,
    lambda m, a: (a.T * 0.7).T,
    lambda m, a: a.reshape(4, 3).reshape(3, 4),
    lambda m, a: m.cat([a[:, :1] * 2.0, a[:, 1:]], 1),
    lambda m, a: m.cat([a[1:], a[:1]], 0),
    lambda m, a: a.max(1, keepdim=True)[0] + a,
]
BINARY: list[Callable[[Any, Any, Any], Any]] = [
    lambda m, a, b: a + b,
    lambda m, a, b: a * b,
    lambda m, a, b: a - b * 0.5,
    lambda m, a, b: a + b.sum(-1, keepdim=True) * 0.1,
    lambda m, a, b: a * b.mean(0, keepdim=True),
    lambda m, a, b: m.cat([a[:, :2], b[:, 2:]], 1),
    lambda m, a, b: m.cat(list(a.split(2, 1)[::-1]), 1) * b,
    lambda m, a, b: m.where(a > b, a, b * 0.5),
    lambda m, a, b: m.stack([a, b], 0).sum(0),
    lambda m, a, b: (a.unsqueeze(0) * b.unsqueeze(1)).mean(1),
]

statement = st.tuples(st.booleans(), st.integers(0, 9), st.integers(0, 99), st.integers(0, 99))


def run_program(m: Any, leaves: list[Any], program: list[tuple[bool, int, int, int]],
                weights: np.ndarray) -> Any:
    values = list(leaves)
    for binary, op, i, j in program:
        a, b = values[i % len(values)], values[j % len(values)]
        values.append(BINARY[op](m, a, b) if binary else UNARY[op](m, a))
    # the loss reads a weighted sum of every third value, so some branches stay unused
    loss = None
    for k, v in enumerate(values[2::3]):
        term = (v * float(weights[k % len(weights)])).sum()
        loss = term if loss is None else loss + term
    return loss


@settings(max_examples=40, deadline=None, derandomize=True)
@given(program=st.lists(statement, min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_random_programs_match_torch(program: list[tuple[bool, int, int, int]],
                                     seed: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))]
    weights = rng.standard_normal(5)
    ours = [Tensor(x, requires_grad=True) for x in xs]
    theirs = [torch.tensor(x, requires_grad=True) for x in xs]
    loss = run_program(ag, ours, program, weights)
    ref = run_program(torch, theirs, program, weights)
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-10)
    loss.backward(retain_graph=True)
    ref.backward()
    for a, b in zip(ours, theirs):
        expected = np.zeros((3, 4)) if b.grad is None else b.grad.numpy()
        got = np.zeros((3, 4)) if a.grad is None else a.grad
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    first = [None if a.grad is None else a.grad.copy() for a in ours]
    loss.backward()  # the retained graph runs again and the leaves accumulate
    for a, g in zip(ours, first):
        if g is not None:
            np.testing.assert_allclose(a.grad, 2 * g, rtol=1e-12)
