"""SelfAttention: torch parity (forward and backward), finite differences, causality, weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck
from spiral.nn import SelfAttention

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage7


def _torch_attention(attn: SelfAttention, x: np.ndarray, causal: bool) -> tuple:
    """The same head written with torch's sdpa and copied weights; returns (y, x, weights)."""
    xt = torch.tensor(x, requires_grad=True)
    ws = [torch.tensor(m.weight.data, requires_grad=True)
          for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj)]
    q, k, v = (xt @ w.T for w in ws[:3])
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                         scale=attn.scale)
    return y @ ws[3].T, xt, ws


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scale", [True, False])
def test_matches_torch_sdpa_forward_and_backward(causal: bool, scale: bool) -> None:
    rng = np.random.default_rng(1)
    attn = SelfAttention(12, 5, causal=causal, scale=scale, rng=rng, dtype=np.float64)
    x = rng.standard_normal((3, 7, 12))
    g = rng.standard_normal((3, 7, 12))
    xo = Tensor(x, requires_grad=True)
    y = attn(xo)
    yt, xt, wt = _torch_attention(attn, x, causal)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for mod, w in zip((attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj), wt, strict=True):
        np.testing.assert_allclose(mod.weight.grad, w.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_float32_matches_torch() -> None:
    rng = np.random.default_rng(2)
    attn = SelfAttention(16, 8, rng=rng)
    x = rng.standard_normal((2, 9, 16)).astype(np.float32)
    y = attn(Tensor(x))
    yt, _, _ = _torch_attention(attn, x, True)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences_float64() -> None:
    rng = np.random.default_rng(3)
    attn = SelfAttention(4, 3, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((2, 5, 4)), requires_grad=True)
    assert gradcheck(lambda t: attn(t), [x], eps=1e-6, atol=1e-6)
    params = list(attn.parameters())
    assert gradcheck(lambda *ps: attn(x), params, eps=1e-6, atol=1e-6)


def test_causal_output_has_exactly_zero_gradient_from_the_future() -> None:
    """∂y_t/∂x_s = 0 exactly for every s > t (−∞ before the softmax gives weight 0.0)."""
    rng = np.random.default_rng(4)
    T = 6
    attn = SelfAttention(8, 4, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((2, T, 8)), requires_grad=True)
    for t in range(T):
        x.grad = None
        g = np.zeros((2, T, 8))
        g[:, t] = rng.standard_normal((2, 8))
        attn(x).backward(g)
        assert np.all(x.grad[:, t + 1:] == 0.0), t  # exactly zero, not merely small
        assert np.all(np.abs(x.grad[:, : t + 1]).sum(-1) > 0), t  # the past does matter


def test_without_the_mask_the_future_does_leak() -> None:
    rng = np.random.default_rng(5)
    attn = SelfAttention(8, 4, causal=False, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((1, 5, 8)), requires_grad=True)
    g = np.zeros((1, 5, 8))
    g[:, 0] = 1.0
    attn(x).backward(g)
    assert np.abs(x.grad[:, 1:]).min() > 0


@settings(deadline=None, max_examples=25)
@given(T=st.integers(1, 9), causal=st.booleans(), seed=st.integers(0, 2**16),
       spread=st.floats(0.1, 30.0))
def test_weights_are_a_distribution_per_query(T: int, causal: bool, seed: int,
                                              spread: float) -> None:
    rng = np.random.default_rng(seed)
    attn = SelfAttention(6, 3, causal=causal, rng=rng, dtype=np.float64)
    x = spread * rng.standard_normal((2, T, 6))
    _, w = attn(Tensor(x), need_weights=True)
    assert w.shape == (2, T, T)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=0, atol=1e-12)
    if causal:
        assert np.all(np.triu(w, k=1) == 0.0)
        np.testing.assert_allclose(w[:, 0, 0], 1.0)  # the first position sees only itself


def test_returned_weights_are_the_ones_the_output_uses() -> None:
    rng = np.random.default_rng(6)
    attn = SelfAttention(10, 4, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((2, 7, 10)))
    y, w = attn(x, need_weights=True)
    v = attn.v_proj(x).data  # (B, T, hd)
    np.testing.assert_allclose(y.data, (w @ v) @ attn.out_proj.weight.data.T, atol=1e-12)


def test_scale_switch() -> None:
    assert SelfAttention(8, 16, rng=np.random.default_rng(0)).scale == 1 / math.sqrt(16)
    assert SelfAttention(8, 16, scale=False, rng=np.random.default_rng(0)).scale == 1.0


def test_extra_boolean_mask_combines_with_causal() -> None:
    rng = np.random.default_rng(7)
    attn = SelfAttention(6, 3, rng=rng, dtype=np.float64)
    keep = np.ones((5, 5), dtype=bool)
    keep[:, 0] = False  # nobody may look at position 0 ...
    keep[0, 0] = True   # ... except position 0 itself (else its row would be all −∞)
    _, w = attn(Tensor(rng.standard_normal((1, 5, 6))), need_weights=True, attn_mask=keep)
    assert np.all(w[0, 1:, 0] == 0.0) and np.all(np.triu(w[0], k=1) == 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)


# ------------------------------------------- one causal convention: queries are the LAST positions
def _lower_right(n_query: int, n_key: int) -> torch.Tensor:
    """torch's bottom-right causal mask (True = may attend): query i sees keys ≤ Tk − Tq + i."""
    return torch.ones(n_query, n_key, dtype=torch.bool).tril(diagonal=n_key - n_query)


@pytest.mark.stage14
@pytest.mark.parametrize("n_query,n_key", [(1, 1), (1, 6), (3, 7), (7, 7)])
def test_causal_mask_is_torchs_lower_right_mask(n_query: int, n_key: int) -> None:
    from spiral.nn.attention import causal_mask

    mine = causal_mask(n_query, n_key, np.float64) == 0.0
    np.testing.assert_array_equal(mine, _lower_right(n_query, n_key).numpy())


@pytest.mark.stage14
def test_causal_mask_refuses_more_queries_than_keys() -> None:
    from spiral.nn.attention import causal_mask

    with pytest.raises(ValueError, match="cannot be the last positions"):
        causal_mask(5, 3)


@pytest.mark.stage14
@pytest.mark.parametrize("n_query", [1, 3, 7])
def test_fewer_queries_than_keys_match_torch_and_the_full_pass(n_query: int) -> None:
    """The last Tq queries against all Tk keys (what a KV cache computes) equal torch's sdpa
    with the explicit lower-right mask, forward and backward, and the last Tq rows of the
    full causal pass."""
    rng = np.random.default_rng(7)
    attn = SelfAttention(12, 4, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 7, 12))
    q, k, v = attn.project(Tensor(x))
    qt, kt, vt = (torch.tensor(t.data, requires_grad=True) for t in (q, k, v))
    mine_q = Tensor(q.data[:, -n_query:], requires_grad=True)
    mine_k, mine_v = Tensor(k.data, requires_grad=True), Tensor(v.data, requires_grad=True)
    from spiral.nn import functional as F

    y = F.scaled_dot_product_attention(mine_q, mine_k, mine_v, scale=attn.scale,
                                       attn_mask=attn.mask(n_query, 7, dtype=np.float64))
    yt = torch.nn.functional.scaled_dot_product_attention(
        qt[:, -n_query:], kt, vt, attn_mask=_lower_right(n_query, 7), scale=attn.scale)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(mine_q.grad, qt.grad.numpy()[:, -n_query:], rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(mine_k.grad, kt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mine_v.grad, vt.grad.numpy(), rtol=1e-10, atol=1e-12)
    full = attn(Tensor(x))  # the whole causal pass: its last rows are the same queries
    np.testing.assert_allclose(attn.out_proj(y).data, full.data[:, -n_query:], rtol=1e-12,
                               atol=1e-12)
