"""spiral.nn.positional: tables, RoPE's hand-written backward, ALiBi masks, GPT integration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck, gradcheck_directional
from spiral.evaluate import evaluate
from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.nn import functional as F
from spiral.nn.positional import (
    ENCODINGS,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    sinusoidal_table,
    wavelengths,
)

pytestmark = pytest.mark.stage9


def test_sinusoidal_table_is_the_formula() -> None:
    """Element by element against PE(pos, 2i) = sin(pos/10000^(2i/d)), cos at 2i + 1."""
    pe = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            w = pos / 10000 ** (2 * i / 16)
            assert pe[pos, 2 * i] == pytest.approx(np.sin(w), abs=1e-12)
            assert pe[pos, 2 * i + 1] == pytest.approx(np.cos(w), abs=1e-12)


def test_sinusoidal_module_any_length_and_offset() -> None:
    enc = SinusoidalPositionalEncoding(8, dtype=np.float64)
    short, long = enc(5).data, enc(300).data
    np.testing.assert_array_equal(short, long[:5])
    np.testing.assert_allclose(enc(4, offset=10).data, sinusoidal_table(14, 8)[10:])
    assert not enc(3).requires_grad
    half = SinusoidalPositionalEncoding(8, dtype=np.float64, amplitude=0.5)
    np.testing.assert_allclose(half(6).data, 0.5 * sinusoidal_table(6, 8))


def test_wavelengths_geometric_from_2pi_to_2pi_base() -> None:
    lam = wavelengths(64)
    assert lam[0] == pytest.approx(2 * np.pi)
    ratios = lam[1:] / lam[:-1]
    np.testing.assert_allclose(ratios, 10000 ** (2 / 64))
    assert lam[-1] < 2 * np.pi * 10000


def test_learned_refuses_positions_beyond_its_table() -> None:
    emb = LearnedPositionalEmbedding(4, 3, rng=np.random.default_rng(0))
    assert emb(np.arange(4)).shape == (4, 3)
    with pytest.raises(ValueError, match="not applicable"):
        emb(np.arange(5))


@pytest.mark.parametrize("convention", ["interleaved", "halves"])
def test_rope_gradcheck_float64(convention: str) -> None:
    """RoPEFn's backward (the inverse rotation) against central differences."""
    x = Tensor(np.random.default_rng(0).standard_normal((2, 5, 6)), requires_grad=True)
    assert gradcheck(lambda t: apply_rope(t, convention=convention), [x])


@pytest.mark.parametrize("convention", ["interleaved", "halves"])
def test_rope_matches_torch_autograd(convention: str) -> None:
    """Values and gradients against the same rotation written with torch ops."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((2, 3, 7, 8)), rng.standard_normal((2, 3, 7, 8))
    ours = Tensor(x, requires_grad=True)
    y = apply_rope(ours, convention=convention)
    y.backward(g)
    theta = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    ang = torch.arange(7, dtype=torch.float64)[:, None] * theta  # (T, 4)
    tx = torch.tensor(x, requires_grad=True)
    if convention == "interleaved":
        a, b = tx[..., 0::2], tx[..., 1::2]
        ty = torch.stack([a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()],
                         dim=-1).flatten(-2)
    else:
        a, b = tx[..., :4], tx[..., 4:]
        ty = torch.cat([a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()], dim=-1)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), atol=1e-12)
    assert ours.grad is not None and tx.grad is not None
    np.testing.assert_allclose(ours.grad, tx.grad.numpy(), atol=1e-12)


def test_rope_preserves_norms_and_position_zero() -> None:
    x = np.random.default_rng(2).standard_normal((4, 9, 10))
    y = apply_rope(Tensor(x)).data
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1))
    np.testing.assert_allclose(y[:, 0], x[:, 0])


def test_rotary_queries_are_the_last_positions() -> None:
    """With fewer queries than keys (a cached prefix) queries sit at the last positions."""
    rng = np.random.default_rng(3)
    q, k = Tensor(rng.standard_normal((1, 1, 6, 4))), Tensor(rng.standard_normal((1, 1, 6, 4)))
    rot = RotaryEmbedding(4)
    q_full, _ = rot(q, k)
    q_last, _ = rot(q[:, :, 4:], k)
    np.testing.assert_allclose(q_last.data, q_full.data[:, :, 4:])


def test_alibi_bias_values_and_causal_mask() -> None:
    b = alibi_bias(4, 5, causal=True, dtype=np.float64)  # (H, T, T)
    m = alibi_slopes(4)
    assert b.shape == (4, 5, 5)
    assert b[2, 4, 1] == pytest.approx(-m[2] * 3)
    assert np.all(np.isneginf(b[:, 1, 2:]))
    np.testing.assert_array_equal(np.diagonal(b, axis1=1, axis2=2), 0.0)
    sym = alibi_bias(4, 5, causal=False, dtype=np.float64)
    np.testing.assert_allclose(sym, np.swapaxes(sym, 1, 2))


@pytest.mark.parametrize("positional", ENCODINGS)
def test_gpt_gradcheck_each_encoding(positional: str) -> None:
    """Directional derivative of the loss vs central differences, float64, all parameters."""
    c = GPTConfig(vocab_size=7, context_length=6, n_layers=2, n_heads=2, d_model=8,
                  positional=positional)
    m = GPT(c, rng=np.random.default_rng(5), dtype=np.float64)
    rng = np.random.default_rng(6)
    x, y = rng.integers(0, 7, (2, 6)), rng.integers(0, 7, (2, 6))
    assert gradcheck_directional(lambda *_: F.cross_entropy(m(x), y), list(m.parameters()),
                                 n_directions=3, rng=rng)


@settings(deadline=None, max_examples=12)
@given(positional=st.sampled_from(ENCODINGS), n_layers=st.integers(1, 2),
       n_heads=st.sampled_from([1, 2, 3]), T=st.integers(2, 9))
def test_parameter_count_per_encoding(positional: str, n_layers: int, n_heads: int,
                                      T: int) -> None:
    c = GPTConfig(vocab_size=9, context_length=T, n_layers=n_layers, n_heads=n_heads,
                  d_model=6 * n_heads, positional=positional)
    m = GPT(c, rng=np.random.default_rng(0))
    assert m.num_parameters() == count_parameters(c)
    learned = GPTConfig(**{**c.to_dict(), "positional": "learned"})
    assert count_parameters(learned) - count_parameters(c) == (
        0 if positional == "learned" else T * c.d_model)


def test_unknown_encoding_rejected() -> None:
    with pytest.raises(ValueError, match="positional"):
        GPT(GPTConfig(vocab_size=5, positional="relative"), rng=np.random.default_rng(0))


@pytest.mark.parametrize("positional", ENCODINGS)
def test_evaluation_beyond_the_trained_length(positional: str) -> None:
    """Every encoding but learned scores windows 4× longer; learned refuses (never clamps)."""
    c = GPTConfig(vocab_size=7, context_length=4, n_layers=1, n_heads=2, d_model=8,
                  positional=positional)
    m = GPT(c, rng=np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 7, 200)
    m.context_length = 16  # the evaluation length is a parameter of the scorer
    if positional == "learned":
        with pytest.raises(ValueError, match="not applicable"):
            evaluate(m, tokens)
    else:
        r = evaluate(m, tokens)
        assert np.isfinite(r.nats) and r.n_tokens == 199


@pytest.mark.parametrize("positional", ["alibi", "rope", "rope_halves"])
def test_attention_weights_match_the_fused_forward(positional: str) -> None:
    """need_weights recomputes the same biased/rotated softmax that the fused node used."""
    from spiral.nn.transformer import MultiHeadAttention

    mha = MultiHeadAttention(8, 4, rng=np.random.default_rng(0), dtype=np.float64,
                             positional=positional)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 6, 8)))
    out, w = mha(x, need_weights=True)  # w (B, H, T, T)
    _, _, v = mha.split_heads(x)
    y = (w @ v.data).transpose(0, 2, 1, 3).reshape(2, 6, 8)  # (B, H, T, hd) -> (B, T, C)
    np.testing.assert_allclose(mha.out_proj(Tensor(y)).data, out.data, atol=1e-12)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    assert np.all(np.triu(w, 1) == 0)
