"""Stage 11: parameter counts by component, and bytes per parameter (ZeRO's 16)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.profiling.memory import (
    activations_by_layer,
    build_gpt_graph,
    bytes_per_parameter,
    count_by_component,
    famous_configs,
    layout_for,
)

pytestmark = pytest.mark.stage11


@settings(max_examples=25, deadline=None)
@given(n_layers=st.integers(1, 3), n_heads=st.sampled_from([1, 2, 4]),
       head_dim=st.sampled_from([2, 4, 8]), vocab=st.integers(3, 40),
       bias=st.booleans(), tie=st.booleans(), placement=st.sampled_from(["pre", "post"]),
       llama=st.booleans(), kv_div=st.sampled_from([1, 2]), ffn=st.booleans())
def test_components_sum_to_the_closed_form_and_to_the_model(
        n_layers: int, n_heads: int, head_dim: int, vocab: int, bias: bool, tie: bool,
        placement: str, llama: bool, kv_div: int, ffn: bool) -> None:
    kv = max(1, n_heads // kv_div)
    extra = dict(norm_type="rmsnorm", ffn_type="swiglu", positional="rope") if llama else {}
    bias = bias and not llama  # Llama's SwiGLU has no biases
    c = GPTConfig(vocab_size=vocab, context_length=8, n_layers=n_layers, n_heads=n_heads,
                  d_model=n_heads * head_dim, bias=bias, tie_weights=tie, placement=placement,
                  n_kv_heads=kv, ffn=ffn, **extra)
    model = GPT(c, rng=np.random.default_rng(0))
    measured = sum(p.data.size for p in model.parameters())
    parts = count_by_component(c)
    assert sum(parts.values()) == count_parameters(c) == measured
    # the analytic graph's leaves are the same parameters
    assert sum(n.numel for n in build_gpt_graph(c, 1, 4) if n.param) == measured


def test_gpt2_small_is_124m_with_tied_head() -> None:
    c = famous_configs()["gpt2-124M"]
    parts = count_by_component(c)
    assert parts["head"] == 0 and parts["token_embedding"] == 50257 * 768
    assert count_parameters(c) == sum(parts.values())
    assert 124e6 < count_parameters(c) < 125e6


def test_zero_identity_sixteen_bytes_per_parameter() -> None:
    mixed = layout_for("adam", "mixed")
    # ZeRO §3.1: 2 (fp16 weights) + 2 (fp16 grads) + K, K = 12 (fp32 master, m, v)
    assert (mixed.param_bytes, mixed.grad_bytes) == (2, 2)
    assert mixed.master_bytes + mixed.state_bytes == 12
    assert bytes_per_parameter("adam", "mixed") == 16
    assert bytes_per_parameter("adamw", "fp32") == 16  # 4 + 4 + 8, no master copy
    assert bytes_per_parameter("sgd", "fp32") == 8
    assert bytes_per_parameter("momentum", "bf16") == 6


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of"):
        layout_for("lion", "fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        layout_for("adam", "fp8")
    with pytest.raises(ValueError, match="exceeds context_length"):
        build_gpt_graph(GPTConfig(vocab_size=5, context_length=4, n_layers=1, n_heads=1,
                                  d_model=4), 1, 8)


@pytest.mark.parametrize("B,T,C,H,e", [(16, 64, 128, 4, 4.0), (3, 17, 48, 6, 2.0)])
def test_activations_per_layer_closed_form(B: int, T: int, C: int, H: int, e: float) -> None:
    """s·(13NC + 3Nh + 2N + BHT²) per pre-LN block without dropout (the chapter's table)."""
    c = GPTConfig(vocab_size=50, context_length=T, n_layers=3, n_heads=H, d_model=C,
                  expansion=e)
    N, h = B * T, int(round(e * C))
    per_layer = 4 * (13 * N * C + 3 * N * h + 2 * N + B * H * T * T)
    layers = activations_by_layer(c, B, T)
    assert [layers[f"block{i}"] for i in range(3)] == [per_layer] * 3
    # with dropout: + 4NC + BHT² (two dropout masks and outputs, the attention keep mask)
    d = activations_by_layer(GPTConfig(**{**c.to_dict(), "dropout": 0.1}), B, T)
    assert d["block0"] == per_layer + 4 * (4 * N * C + B * H * T * T)
