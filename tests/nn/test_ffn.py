"""The feed-forward sub-layers of stage 14: SwiGLU against torch, the 8/3·d width, GELU-tanh."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.nn.ffn import FeedForward, SwiGLUFeedForward, make_ffn, swiglu_hidden

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage14


@pytest.mark.parametrize("hidden", [None, 7])
def test_swiglu_matches_torch_forward_and_backward(hidden: int | None) -> None:
    """W₂(SiLU(W₁x) ⊙ W₃x) written with torch.nn.functional.silu: output and all gradients."""
    rng = np.random.default_rng(0)
    ffn = SwiGLUFeedForward(12, hidden=hidden, rng=rng, dtype=np.float64)
    x, g = rng.standard_normal((2, 5, 12)), rng.standard_normal((2, 5, 12))
    xo = Tensor(x, requires_grad=True)
    y = ffn(xo)
    y.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    w1, w2, w3 = (torch.tensor(m.weight.data, requires_grad=True)
                  for m in (ffn.w1, ffn.w2, ffn.w3))
    yt = (torch.nn.functional.silu(xt @ w1.T) * (xt @ w3.T)) @ w2.T
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    for mine, theirs in ((xo.grad, xt.grad), (ffn.w1.weight.grad, w1.grad),
                         (ffn.w2.weight.grad, w2.grad), (ffn.w3.weight.grad, w3.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-12)


@given(d=st.integers(1, 4096), e=st.sampled_from([2.0, 4.0, 8.0 / 3.0]),
       m=st.sampled_from([1, 8, 64, 256]))
@settings(deadline=None, max_examples=200)
def test_swiglu_width_matches_the_gelu_mlp_within_the_rounding(d: int, e: float, m: int) -> None:
    """3·d·h against 2·e·d²: equal up to half a rounding step, |Δ| ≤ 3·d·m/2 (or h = m)."""
    h = swiglu_hidden(d, e, m)
    assert h % m == 0 and h >= m
    if 2 * e * d / 3 >= m / 2:  # the nearest multiple is not clamped to the minimum m
        assert abs(3 * d * h - 2 * e * d * d) <= 3 * d * m / 2 + 1e-6


def test_swiglu_parameter_count_is_three_matrices() -> None:
    ffn = SwiGLUFeedForward(128, rng=np.random.default_rng(0))
    gelu = FeedForward(128, rng=np.random.default_rng(0))
    assert ffn.num_parameters() == 3 * 128 * 344 and gelu.num_parameters() == 2 * 128 * 512
    assert abs(ffn.num_parameters() - gelu.num_parameters()) <= 3 * 128 * 8 / 2


def test_gelu_tanh_matches_torch() -> None:
    rng = np.random.default_rng(1)
    ffn = make_ffn("gelu", 6, gelu_approximate="tanh", bias=True, rng=rng, dtype=np.float64)
    assert isinstance(ffn, FeedForward)
    x = rng.standard_normal((3, 6))
    yt = torch.nn.functional.gelu(torch.from_numpy(x) @ torch.from_numpy(ffn.fc.weight.data).T
                                  + torch.from_numpy(ffn.fc.bias.data), approximate="tanh")
    yt = yt @ torch.from_numpy(ffn.proj.weight.data).T + torch.from_numpy(ffn.proj.bias.data)
    np.testing.assert_allclose(ffn(Tensor(x)).data, yt.numpy(), rtol=1e-12, atol=1e-13)


def test_bad_ffn_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="ffn_type must be one of"):
        make_ffn("relu2", 8)
    with pytest.raises(ValueError, match="bias-free"):
        make_ffn("swiglu", 8, bias=True)
    with pytest.raises(ValueError, match="gelu_approximate"):
        make_ffn("gelu", 8, gelu_approximate="erf")
    with pytest.raises(ValueError, match="multiple_of"):
        swiglu_hidden(8, 4.0, 0)
