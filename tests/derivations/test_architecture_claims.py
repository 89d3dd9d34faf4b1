"""Stage 14's claims, each checked: RMSNorm is LayerNorm without the mean, GQA's savings in
parameters and KV cache, SwiGLU's matched width, the 6·N·D rule's size at our scale."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.nn.norm import LayerNorm, RMSNorm
from spiral.scaling import approx_training_flops, matmul_parameters, training_flops

pytestmark = pytest.mark.stage14


def test_rmsnorm_is_layernorm_on_centred_inputs_and_differs_otherwise() -> None:
    """Dropping the mean is exact when the features already have mean zero."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16))
    centred = x - x.mean(-1, keepdims=True)
    ln, rms = LayerNorm(16, bias=False, dtype=np.float64), RMSNorm(16, eps=1e-5,
                                                                   dtype=np.float64)
    np.testing.assert_allclose(rms(Tensor(centred)).data, ln(Tensor(centred)).data, rtol=1e-12)
    assert not np.allclose(rms(Tensor(x + 3.0)).data, ln(Tensor(x + 3.0)).data, atol=1e-2)


@pytest.mark.parametrize("n_kv", [1, 2, 4, 8])
def test_kv_cache_bytes_per_token_predicted_equals_measured(n_kv: int) -> None:
    """2·L·Hkv·hd·itemsize: the bytes of the K and V arrays the model actually computes."""
    c = GPTConfig(vocab_size=20, context_length=16, n_layers=3, n_heads=8, d_model=32,
                  n_kv_heads=n_kv, positional="rope_halves", norm_type="rmsnorm")
    m = GPT(c, rng=np.random.default_rng(0))
    x = m.tok_emb(np.zeros((1, 16), np.int64))
    measured = 0
    for blk in m.blocks:
        _, k, v = blk.attn.split_heads(x)
        measured += k.data.nbytes + v.data.nbytes
    assert measured / 16 == c.kv_cache_bytes_per_token(itemsize=4)
    mha = GPTConfig(**{**c.to_dict(), "n_kv_heads": None})
    assert mha.kv_cache_bytes_per_token() == c.kv_cache_bytes_per_token() * (8 // n_kv)


def test_gqa_saves_two_kv_projections_per_shared_head() -> None:
    """Each kv head removed saves 2·C·hd weights (its K and V rows) per layer."""
    base = dict(vocab_size=20, context_length=16, n_layers=3, n_heads=8, d_model=32)
    mha = count_parameters(GPTConfig(**base))  # type: ignore[arg-type]
    for n_kv in (1, 2, 4):
        gqa = count_parameters(GPTConfig(**base, n_kv_heads=n_kv))  # type: ignore[arg-type]
        assert mha - gqa == 3 * 2 * 32 * 4 * (8 - n_kv)


def test_six_n_d_misses_exactly_the_attention_term() -> None:
    """The exact count exceeds 6·N_mm·D by 12·L·T·C·D: at the baby's T = 64 and C = 128 a
    fraction 2·L·T·C/N_mm of the 6ND term (Kaplan et al.'s criterion: small when T ≪ 12·C)."""
    c = GPTConfig.preset("llama-baby", 65)
    n_mm = matmul_parameters(c)
    exact, plain = training_flops(c, 1e6), approx_training_flops(n_mm, 1e6)
    extra = 12 * c.n_layers * c.context_length * c.d_model * 1e6
    assert exact - plain == pytest.approx(extra, rel=1e-12)
    assert (exact - plain) / plain == pytest.approx(2 * 4 * 64 * 128 / n_mm, rel=1e-12)
