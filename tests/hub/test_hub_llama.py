"""Llama-family checkpoints on our engine: RMSNorm, SwiGLU, RoPE bases, GQA/MQA, heads."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.models.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
from spiral import hub  # noqa: E402
from tests.hub.conftest import hf_logits, rel_err, save_random, token_ids  # noqa: E402

pytestmark = pytest.mark.stage14

TOL = 1e-5


@pytest.mark.parametrize("cfg", [
    {},                                                         # GQA: 4 query heads, 2 kv heads
    {"num_key_value_heads": 1, "tie_word_embeddings": True},    # MQA, tied head
    {"num_key_value_heads": 4, "rope_theta": 500000.0},         # MHA, Llama 3's base
    {"rope_theta": 1e6, "rms_norm_eps": 1e-5, "num_attention_heads": 8,
     "num_key_value_heads": 2},                                 # base 10^6, head_dim 4
    {"rope_theta": 100.0, "tie_word_embeddings": True},         # a small base: fast rotation
])
def test_llama_logits_equal_transformers(tmp_path, cfg):
    ref_model = save_random("llama", tmp_path, **cfg)
    model = hub.load_model(tmp_path)
    c = model.config
    assert (c.kv_heads, c.tie_weights) == (cfg.get("num_key_value_heads", 2),
                                           cfg.get("tie_word_embeddings", False))
    assert c.rope_theta == cfg.get("rope_theta", 10000.0)
    ids = token_ids(61, (2, 64))
    assert rel_err(model(ids).data, hf_logits(ref_model, ids)) < TOL


def test_llama_baby_round_trip(tmp_path):
    """Stage 14's Llama-style model -> llama folder -> transformers -> logits equal; back."""
    cfg = GPTConfig.preset("llama-baby", vocab_size=65, n_kv_heads=2, rope_theta=5e5)
    ours = GPT(cfg, rng=np.random.default_rng(3))
    hub.export(ours, tmp_path, family="llama")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = token_ids(65, (2, 64))
    assert rel_err(hf_logits(theirs, ids), ours(ids).data) < TOL
    back = hub.load_model(tmp_path)
    np.testing.assert_array_equal(back(ids).data, ours(ids).data)  # same floats, same math


def test_evaluator_protocol_runs_through_the_loaded_model(tmp_path):
    """window_nll (the evaluator's protocol) equals the NLL from transformers' logits."""
    ref_model = save_random("llama", tmp_path)
    model = hub.load_model(tmp_path)
    w = token_ids(61, (2, 20), seed=4)
    logits = hf_logits(ref_model, w[:, :-1]).astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
                           ) - logits.max(-1, keepdims=True)
    nll = -np.take_along_axis(logp, w[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(model.window_nll(w), nll, rtol=1e-4)


@pytest.mark.parametrize("cfg,match", [
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_type 'linear'"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"head_dim": 16}, "head_dim"),
])
def test_unsupported_llama_configs_are_clear_errors(tmp_path, cfg, match):
    save_random("llama", tmp_path, **cfg)
    with pytest.raises(hub.HubError, match=match):
        hub.load_model(tmp_path)


@pytest.mark.parametrize("theta,factor", [(500000.0, 8.0), (10000.0, 32.0)])
def test_llama3_rope_scaling_logits_equal_transformers(tmp_path, theta, factor):
    """Llama 3.1/3.2's scaled frequencies: the band between the two wavelengths interpolates.
    original_max_position_embeddings = 16 puts head_dim 8's wavelengths in all three bands.
    Most of the remaining error is transformers rounding the scaled frequencies to float32
    (we keep them in float64): with its float32 frequencies ours differs by ~2e-6."""
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    ref_model = save_random("llama", tmp_path / "hf", rope_theta=theta,
                            rope_scaling=dict(scaling))  # transformers edits the dict it gets
    model = hub.load_model(tmp_path / "hf")
    assert model.config.rope_scaling == scaling
    ids = token_ids(61, (2, 64))
    assert rel_err(model(ids).data, hf_logits(ref_model, ids)) < TOL
    hub.export(model, tmp_path / "ours", family="llama")  # and out again
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
    assert rel_err(hf_logits(again, ids), hf_logits(ref_model, ids)) < TOL


def test_bfloat16_checkpoints_widen_exactly(tmp_path):
    """Most Llama-family files are bfloat16: its 16 bits are the top half of a float32."""
    import torch

    ref_model = save_random("llama", tmp_path / "f32")
    ref_model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    model = hub.load_model(tmp_path / "bf16")
    want = ref_model.model.layers[0].mlp.up_proj.weight.detach().float().numpy()
    np.testing.assert_array_equal(model.blocks[0].ffn.w3.weight.data, want)
    widened = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16",
                                                                dtype=torch.float32)  # its own widening
    ids = token_ids(61)
    assert rel_err(model(ids).data, hf_logits(widened, ids)) < TOL
