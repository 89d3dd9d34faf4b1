"""MultiHeadAttention, FeedForward, Block: torch parity, finite differences, the switches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck_directional
from spiral.nn.transformer import Block, FeedForward, MultiHeadAttention

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage8


def _torch_mha(mha: MultiHeadAttention, bias: bool) -> torch.nn.MultiheadAttention:
    """torch.nn.MultiheadAttention with our weights: in_proj is [W_Q; W_K; W_V], as ours."""
    ref = torch.nn.MultiheadAttention(mha.d_model, mha.n_heads, bias=bias, batch_first=True,
                                      dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.from_numpy(mha.qkv_proj.weight.data))
        ref.out_proj.weight.copy_(torch.from_numpy(mha.out_proj.weight.data))
        if bias:
            assert mha.qkv_proj.bias is not None and mha.out_proj.bias is not None
            ref.in_proj_bias.copy_(torch.from_numpy(mha.qkv_proj.bias.data))
            ref.out_proj.bias.copy_(torch.from_numpy(mha.out_proj.bias.data))
    return ref


@settings(deadline=None, max_examples=8)
@given(n_heads=st.sampled_from([1, 2, 3, 6]), T=st.integers(1, 9), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_mha_matches_torch_multihead_attention(n_heads: int, T: int, bias: bool,
                                               seed: int) -> None:
    """Forward, input gradient and weight gradients equal torch.nn.MultiheadAttention's."""
    rng = np.random.default_rng(seed)
    mha = MultiHeadAttention(12, n_heads, bias=bias, rng=rng, dtype=np.float64)
    if bias:  # non-zero biases so that their gradients are checked too
        for lin in (mha.qkv_proj, mha.out_proj):
            assert lin.bias is not None
            lin.bias.data[...] = rng.standard_normal(lin.bias.shape)
    x = rng.standard_normal((2, T, 12))
    g = rng.standard_normal((2, T, 12))
    xo = Tensor(x, requires_grad=True)
    y = mha(xo)
    ref = _torch_mha(mha, bias)
    xt = torch.tensor(x, requires_grad=True)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = blocked
    yt, wt = ref(xt, xt, xt, attn_mask=mask, need_weights=True, average_attn_weights=False)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(mha.qkv_proj.weight.grad, ref.in_proj_weight.grad.numpy(),
                               rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(mha.out_proj.weight.grad, ref.out_proj.weight.grad.numpy(),
                               rtol=1e-9, atol=1e-11)
    if bias:
        assert mha.qkv_proj.bias is not None
        np.testing.assert_allclose(mha.qkv_proj.bias.grad, ref.in_proj_bias.grad.numpy(),
                                   rtol=1e-9, atol=1e-11)
    _, w = mha(Tensor(x), need_weights=True)
    np.testing.assert_allclose(w, wt.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_mha_matches_reference_module_float32() -> None:
    """float32, against the benchmark's torch module with F.scaled_dot_product_attention."""
    from benchmarks.torch_gpt import MultiHeadAttention as TorchMHA

    rng = np.random.default_rng(3)
    mha = MultiHeadAttention(32, 4, rng=rng)
    ref = TorchMHA(32, 4)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in mha.state_dict().items()})
    x = rng.standard_normal((3, 10, 32)).astype(np.float32)
    xo = Tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    y, yt = mha(xo), ref(xt)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-4, atol=1e-6)
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_mha_is_causal() -> None:
    """Changing a later token leaves every earlier output unchanged."""
    rng = np.random.default_rng(4)
    mha = MultiHeadAttention(8, 2, rng=rng, dtype=np.float64)
    x = rng.standard_normal((1, 6, 8))
    x2 = x.copy()
    x2[0, 4:] += 1.0
    y, y2 = mha(Tensor(x)).data, mha(Tensor(x2)).data
    np.testing.assert_allclose(y[0, :4], y2[0, :4], rtol=0, atol=1e-14)
    assert not np.allclose(y[0, 4:], y2[0, 4:])


def test_mha_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)


@pytest.mark.parametrize("expansion, width", [(4.0, 64), (1.0, 16), (8 / 3, 43), (0.5, 8)])
def test_feedforward_width_and_formula(expansion: float, width: int) -> None:
    """FFN(x) = W₂ GELU(W₁ x) with W₁ (round(e·d_model), d_model)."""
    rng = np.random.default_rng(5)
    ffn = FeedForward(16, expansion, rng=rng, dtype=np.float64)
    assert ffn.fc.weight.shape == (width, 16) and ffn.proj.weight.shape == (16, width)
    x = rng.standard_normal((3, 16))
    ref = torch.nn.functional.gelu(torch.from_numpy(x) @ torch.from_numpy(ffn.fc.weight.data).T)
    ref = ref @ torch.from_numpy(ffn.proj.weight.data).T
    np.testing.assert_allclose(ffn(Tensor(x)).data, ref.numpy(), rtol=1e-12, atol=1e-14)


def _ref_block(blk: Block, x: np.ndarray) -> np.ndarray:
    """The block's equations written out in torch with the block's weights."""
    f = torch.nn.functional

    def ln(z: torch.Tensor, m: object) -> torch.Tensor:
        w = getattr(m, "weight", None)
        if w is None:
            return z
        return f.layer_norm(z, (z.shape[-1],), torch.from_numpy(w.data))

    mha = blk.attn
    ref_attn = _torch_mha(mha, bias=False)
    mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), diagonal=1)

    def attn(z: torch.Tensor) -> torch.Tensor:
        return ref_attn(z, z, z, attn_mask=mask, need_weights=False)[0]

    def ffn(z: torch.Tensor) -> torch.Tensor:
        assert blk.ffn is not None
        h = f.gelu(z @ torch.from_numpy(blk.ffn.fc.weight.data).T)
        return h @ torch.from_numpy(blk.ffn.proj.weight.data).T

    z = torch.from_numpy(x)
    subs = [(attn, blk.ln1)] + ([(ffn, blk.ln2)] if blk.ffn is not None else [])
    for fn, norm in subs:
        if blk.placement == "pre":
            h = fn(ln(z, norm))
            z = z + h if blk.residual else h
        else:
            h = fn(z)
            z = ln(z + h if blk.residual else h, norm)
    return z.detach().numpy()


@pytest.mark.parametrize("placement", ["pre", "post"])
@pytest.mark.parametrize("switches", [{}, {"residual": False}, {"norm": False},
                                      {"ffn": False}])
def test_block_equations(placement: str, switches: dict) -> None:
    """pre-LN x + F(LN x), post-LN LN(x + F x), and each ablation switch, against torch."""
    rng = np.random.default_rng(6)
    blk = Block(16, 4, placement=placement, rng=rng, dtype=np.float64, **switches)
    for p in blk.parameters():  # non-trivial norm gains
        if p.ndim == 1:
            p.data[...] = 1.0 + 0.3 * rng.standard_normal(p.shape)
    x = rng.standard_normal((2, 5, 16))
    np.testing.assert_allclose(blk(Tensor(x)).data, _ref_block(blk, x), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_gradcheck(placement: str) -> None:
    """Directional finite differences (float64) through a whole block, input and weights."""
    rng = np.random.default_rng(7)
    blk = Block(8, 2, expansion=2.0, placement=placement, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((2, 4, 8)), requires_grad=True)
    params = [x, *blk.parameters()]
    assert gradcheck_directional(lambda *a: blk(x), params, n_directions=4, rng=rng)


def test_block_attention_weights_match_forward() -> None:
    """attention_weights returns the same output as forward, and rows that sum to one."""
    rng = np.random.default_rng(8)
    blk = Block(8, 2, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((2, 5, 8)))
    out, w = blk.attention_weights(x)
    np.testing.assert_allclose(out.data, blk(x).data, rtol=1e-12)
    assert w.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.triu(w, k=1) == 0)


# ------------------------- stage 14: queries last, RoPE / ALiBi / GQA against a torch reference
def _torch_rope_halves(x: torch.Tensor, positions: np.ndarray, theta: float) -> torch.Tensor:
    """Llama / Hugging Face RoPE: pairs (i, i + d/2), x·cos + rotate_half(x)·sin."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.from_numpy(positions.astype(np.float64))[:, None] * inv[None]  # (T, d/2)
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    rot = torch.cat([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * cos + rot * sin


def _torch_gqa(x: torch.Tensor, w_qkv: torch.Tensor, w_o: torch.Tensor, H: int, Hkv: int,
               n_query: int, positional: str, theta: float) -> torch.Tensor:
    """Reference: split heads, rotate, repeat_interleave the kv heads, sdpa with the
    lower-right causal mask (plus ALiBi's −m_h·(i − j)), keep the last n_query queries."""
    B, T, C = x.shape
    hd = C // H
    qkv = x @ w_qkv.T
    q = qkv[..., :H * hd].reshape(B, T, H, hd).transpose(1, 2)[:, :, -n_query:]
    k = qkv[..., H * hd:(H + Hkv) * hd].reshape(B, T, Hkv, hd).transpose(1, 2)
    v = qkv[..., (H + Hkv) * hd:].reshape(B, T, Hkv, hd).transpose(1, 2)
    if positional == "rope_halves":
        q = _torch_rope_halves(q, np.arange(T - n_query, T), theta)
        k = _torch_rope_halves(k, np.arange(T), theta)
    k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    allowed = torch.ones(n_query, T, dtype=torch.bool).tril(diagonal=T - n_query)
    mask: torch.Tensor = allowed
    if positional == "alibi":
        slopes = 2.0 ** (-8.0 * torch.arange(1, H + 1, dtype=torch.float64) / H)
        i = torch.arange(T - n_query, T, dtype=torch.float64)[:, None]
        j = torch.arange(T, dtype=torch.float64)[None, :]
        mask = (-slopes[:, None, None] * (i - j)).masked_fill(~allowed, float("-inf"))
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2).reshape(B, n_query, C) @ w_o.T


@pytest.mark.stage14
@pytest.mark.parametrize("positional", ["learned", "alibi", "rope_halves"])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("n_query", [1, 3, 6])
def test_gqa_with_fewer_queries_matches_torch(positional: str, n_kv_heads: int,
                                              n_query: int) -> None:
    """MHA (Hkv = H), GQA and MQA (Hkv = 1), the last Tq queries against Tk = 6 keys, for plain,
    ALiBi and RoPE attention: forward and every gradient equal torch's (float64)."""
    rng = np.random.default_rng(n_kv_heads * 10 + n_query)
    mha = MultiHeadAttention(16, 4, n_kv_heads=n_kv_heads, positional=positional,
                             rope_theta=500.0, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 6, 16))
    xo = Tensor(x, requires_grad=True)
    q, k, v = mha.split_heads(xo)
    y = mha.out_proj(mha.attend(q[:, :, -n_query:], k, v))
    xt = torch.tensor(x, requires_grad=True)
    wq = torch.tensor(mha.qkv_proj.weight.data, requires_grad=True)
    wo = torch.tensor(mha.out_proj.weight.data, requires_grad=True)
    yt = _torch_gqa(xt, wq, wo, 4, n_kv_heads, n_query, positional, 500.0)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    for mine, theirs in ((xo.grad, xt.grad), (mha.qkv_proj.weight.grad, wq.grad),
                         (mha.out_proj.weight.grad, wo.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-9, atol=1e-11)
    # the KV-cache property: the full causal pass's last rows are the same numbers
    np.testing.assert_allclose(mha(Tensor(x)).data[:, -n_query:], y.data, rtol=1e-10,
                               atol=1e-12)


@pytest.mark.stage14
def test_gqa_weights_and_parameter_count() -> None:
    """The K and V projections shrink to Hkv·hd rows; need_weights gives (B, H, T, T) rows
    summing to one with kv head h // G shared by G query heads."""
    mha = MultiHeadAttention(16, 4, n_kv_heads=2, rng=np.random.default_rng(0))
    assert mha.qkv_proj.weight.shape == ((4 + 2 * 2) * 4, 16)
    _, w = mha(Tensor(np.random.default_rng(1).standard_normal((1, 5, 16))), need_weights=True)
    assert w.shape == (1, 4, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(w[0, 0], 1) == 0.0)
    with pytest.raises(ValueError, match="not a multiple of n_kv_heads"):
        MultiHeadAttention(16, 4, n_kv_heads=3)
