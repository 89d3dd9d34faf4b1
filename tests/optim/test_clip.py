"""clip_grad_norm_ against torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.optim import clip_grad_norm_

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage5


@settings(deadline=None, max_examples=40)
@given(max_norm=st.floats(1e-3, 100.0), norm_type=st.sampled_from([1.0, 2.0, 3.0, math.inf]),
       scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_clip_matches_torch(max_norm, norm_type, scale, seed) -> None:
    rng = np.random.default_rng(seed)
    grads = [rng.normal(size=s) * scale for s in [(4, 3), (7,), ()]]
    ours = [Tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    ours.append(Tensor(np.zeros(2), requires_grad=True))          # no gradient: skipped
    theirs.append(torch.zeros(2, dtype=torch.float64, requires_grad=True))
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = g.copy(), torch.tensor(g.copy())
    total = clip_grad_norm_(ours, max_norm, norm_type)
    ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(float(ref), rel=1e-12)
    for p, q in zip(ours[:-1], theirs[:-1]):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)
    assert ours[-1].grad is None


def test_clip_single_tensor_float32_and_nonfinite() -> None:
    p = Tensor(np.zeros(4, dtype=np.float32), requires_grad=True)
    p.grad = np.array([3.0, 4.0, 0.0, 0.0], dtype=np.float32)
    grad = p.grad
    assert clip_grad_norm_(p, 1.0) == pytest.approx(5.0)
    assert p.grad is grad and p.grad.dtype == np.float32          # in place
    np.testing.assert_allclose(np.linalg.norm(p.grad), 1.0, rtol=1e-5)
    p.grad = np.array([np.inf, 1.0], dtype=np.float32)
    with pytest.raises(RuntimeError):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert clip_grad_norm_([Tensor(np.zeros(2), requires_grad=True)], 1.0) == 0.0
