"""Stage 14's switches on the GPT: presets, parameter counts, GQA ≡ MHA/MQA, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck_directional
from spiral.models.gpt import GPT, PRESETS, GPTConfig, count_parameters
from spiral.nn import functional as F

pytestmark = pytest.mark.stage14

LLAMA_TINY = GPTConfig(vocab_size=11, context_length=8, n_layers=2, n_heads=4, d_model=16,
                       norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves",
                       n_kv_heads=2, rope_theta=100.0, norm_eps=1e-6)


@settings(deadline=None, max_examples=30)
@given(n_kv=st.sampled_from([1, 2, 4]), norm_type=st.sampled_from(["layernorm", "rmsnorm"]),
       ffn_type=st.sampled_from(["gelu", "swiglu"]),
       positional=st.sampled_from(["learned", "rope_halves", "alibi"]), bias=st.booleans(),
       tie=st.booleans(), hidden=st.sampled_from([None, 5]))
def test_parameter_count_closed_form_with_the_new_switches(
        n_kv: int, norm_type: str, ffn_type: str, positional: str, bias: bool, tie: bool,
        hidden: int | None) -> None:
    bias = bias and ffn_type == "gelu"  # the SwiGLU sub-layer is bias-free
    c = GPTConfig(vocab_size=13, context_length=7, n_layers=2, n_heads=4, d_model=8,
                  n_kv_heads=n_kv, norm_type=norm_type, ffn_type=ffn_type,
                  positional=positional, bias=bias, tie_weights=tie, ffn_hidden=hidden)
    assert GPT(c, rng=np.random.default_rng(0)).num_parameters() == count_parameters(c)


def test_gpt2_baby_is_the_stage_8_baby_and_llama_baby_matches_its_size() -> None:
    """gpt2-baby = baby field for field; llama-baby's count is within half a SwiGLU width
    step (3·C·L/2) of it, the learned position table it drops included."""
    assert GPTConfig.preset("gpt2-baby", 65) == GPTConfig.preset("baby", 65)
    gpt, llama = GPTConfig.preset("gpt2-baby", 65), GPTConfig.preset("llama-baby", 65)
    assert (llama.norm_type, llama.ffn_type, llama.positional) == ("rmsnorm", "swiglu",
                                                                  "rope_halves")
    assert abs(count_parameters(llama) - count_parameters(gpt)) <= 3 * 128 * 4 / 2
    for name in ("small", "baby"):  # the same holds for the other pair
        twin = GPTConfig.preset("llama-" + name, 65)
        C, L = twin.d_model, twin.n_layers
        assert abs(count_parameters(twin) - count_parameters(GPTConfig.preset(name, 65))) \
            <= 3 * C * L / 2
    assert set(PRESETS) >= {"baby", "small", "gpt2-baby", "llama-baby"}


def test_bad_switches_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="norm_type must be one of"):
        GPTConfig(vocab_size=5, norm_type="batchnorm")
    with pytest.raises(ValueError, match="ffn_type must be one of"):
        GPTConfig(vocab_size=5, ffn_type="geglu")
    with pytest.raises(ValueError, match="not a multiple of n_kv_heads"):
        GPTConfig(vocab_size=5, n_heads=4, n_kv_heads=3)


def _expand_kv(small: GPT, big: GPT) -> None:
    """Copy a GQA model into an MHA one, each kv head's rows repeated for its G query heads."""
    c = small.config
    H, Hkv, hd = c.n_heads, c.kv_heads, c.head_dim
    big_params = dict(big.named_parameters())
    for name, p in small.named_parameters():
        if not name.endswith("qkv_proj.weight"):
            big_params[name].data[...] = p.data
            continue
        w = p.data
        q, k, v = w[:H * hd], w[H * hd:(H + Hkv) * hd], w[(H + Hkv) * hd:]

        def rep(m: np.ndarray) -> np.ndarray:  # (Hkv·hd, C) -> (H·hd, C), head-wise repeat
            return np.repeat(m.reshape(Hkv, hd, -1), H // Hkv, axis=0).reshape(H * hd, -1)

        big_params[name].data[...] = np.concatenate([q, rep(k), rep(v)])


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_gqa_model_equals_mha_model_with_repeated_kv_heads(n_kv: int) -> None:
    """A Llama-style model with Hkv kv heads computes what the MHA model whose K/V heads are
    copies computes (Hkv = 1: MQA; Hkv = H: the copy is the identity); the gradient of each
    shared kv weight is the sum of its copies' gradients."""
    small = GPT(GPTConfig(**{**LLAMA_TINY.to_dict(), "n_kv_heads": n_kv}),
                rng=np.random.default_rng(1), dtype=np.float64)
    big = GPT(GPTConfig(**{**LLAMA_TINY.to_dict(), "n_kv_heads": 4}),
              rng=np.random.default_rng(2), dtype=np.float64)
    _expand_kv(small, big)
    ids = np.random.default_rng(3).integers(0, 11, (2, 8))
    ys, yb = small(ids), big(ids)
    np.testing.assert_allclose(ys.data, yb.data, rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(4).standard_normal(ys.shape)
    ys.backward(g)
    yb.backward(g)
    H, hd = 4, 4
    for blk_s, blk_b in zip(small.blocks, big.blocks, strict=True):
        gs, gb = blk_s.attn.qkv_proj.weight.grad, blk_b.attn.qkv_proj.weight.grad
        summed = gb[H * hd:2 * H * hd].reshape(n_kv, 4 // n_kv, hd, -1).sum(1)
        np.testing.assert_allclose(gs[H * hd:(H + n_kv) * hd], summed.reshape(n_kv * hd, -1),
                                   rtol=1e-9, atol=1e-12)


def test_llama_style_model_passes_a_whole_model_gradient_check() -> None:
    """∇L·d against a central difference along random directions, every parameter (float64)."""
    m = GPT(LLAMA_TINY, rng=np.random.default_rng(0), dtype=np.float64)
    for p in m.parameters():  # move norm gains off 1 so that their gradients matter too
        if p.ndim == 1:
            p.data[...] = 1 + 0.1 * np.random.default_rng(5).standard_normal(p.shape)
    ids = np.random.default_rng(1).integers(0, 11, (2, 8))

    def loss(*params: Tensor) -> Tensor:
        logits = m(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 11), ids[:, 1:].reshape(-1))

    assert gradcheck_directional(loss, list(m.parameters()), eps=1e-6, atol=1e-7, rtol=1e-6,
                                 n_directions=4, rng=np.random.default_rng(2))


def test_untied_head_and_gelu_tanh_switches_take_effect() -> None:
    c = GPTConfig(vocab_size=11, context_length=8, n_layers=1, n_heads=2, d_model=8,
                  tie_weights=False, gelu_approximate="tanh", bias=True, norm_eps=1e-3)
    m = GPT(c, rng=np.random.default_rng(0))
    assert m.lm_head is not None and m.head_weight is not m.tok_emb.weight
    ffn = m.blocks[0].ffn
    assert ffn is not None and "tanh" in repr(ffn)
    assert m.final_norm is not None and m.final_norm.eps == 1e-3


def test_to_dict_keeps_stage_8_records_unchanged_and_round_trips() -> None:
    """A GPT-2 config's dict has exactly the pre-stage-14 keys (so checkpoints written before
    the new switches existed still resume); every config rebuilds from its dict."""
    from spiral.models.gpt import STAGE14_FIELDS

    baby = GPTConfig.preset("gpt2-baby", 65)
    assert not set(baby.to_dict()) & set(STAGE14_FIELDS)
    for name in PRESETS:
        c = GPTConfig.preset(name, 65)
        assert GPTConfig(**c.to_dict()) == c
    assert GPTConfig(**LLAMA_TINY.to_dict()) == LLAMA_TINY
    assert LLAMA_TINY.to_dict()["n_kv_heads"] == 2 and "ffn_multiple_of" not in LLAMA_TINY.to_dict()
