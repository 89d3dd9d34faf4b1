"""GPT-2 checkpoints on our engine: logits equal to transformers', export and round trip."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from spiral.models.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
from spiral import hub  # noqa: E402
from tests.hub.conftest import hf_logits, rel_err, save_random, token_ids  # noqa: E402

pytestmark = pytest.mark.stage8

TOL = 1e-5  # float32, relative to the scale of the logits


@pytest.mark.parametrize("cfg", [
    {},                                                      # GPT-2 as released: tied, gelu_new
    {"tie_word_embeddings": False},                          # untied head
    {"activation_function": "gelu", "n_inner": 40},          # exact GELU, explicit width
    {"layer_norm_epsilon": 1e-3, "n_layer": 3, "n_head": 2},
])
def test_gpt2_logits_equal_transformers(tmp_path, cfg):
    ref_model = save_random("gpt2", tmp_path, **cfg)
    model = hub.load_model(tmp_path)
    ids = token_ids(61, (3, 32))
    assert model.config.gelu_approximate == ("none" if cfg.get("activation_function") else "tanh")
    assert rel_err(model(ids).data, hf_logits(ref_model, ids)) < TOL


def test_sharded_checkpoint_loads_the_same(tmp_path):
    ref_model = save_random("gpt2", tmp_path / "one")
    ref_model.save_pretrained(tmp_path / "many", max_shard_size="20KB")
    assert (tmp_path / "many" / "model.safetensors.index.json").is_file()
    ids = token_ids(61)
    a, b = hub.load_model(tmp_path / "one"), hub.load_model(tmp_path / "many")
    np.testing.assert_array_equal(a(ids).data, b(ids).data)


@pytest.mark.parametrize("preset,approx", [("gpt2-baby", "none"), ("gpt2-baby", "tanh")])
def test_our_model_exports_to_transformers_and_back(tmp_path, preset, approx):
    """The book's model (no biases, exact GELU, tied) -> GPT-2 folder -> transformers."""
    cfg = GPTConfig.preset(preset, vocab_size=65, gelu_approximate=approx)
    ours = GPT(cfg, rng=np.random.default_rng(1))
    for p in ours.parameters():  # make the norms' gains matter
        if p.ndim == 1:
            p.data[...] = np.random.default_rng(2).normal(1.0, 0.3, p.shape)
    hub.export(ours, tmp_path, family="gpt2", max_shard_bytes=200_000)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = token_ids(65, (2, 64))
    expected = ours(ids).data
    assert rel_err(hf_logits(theirs, ids), expected) < TOL
    back = hub.load_model(tmp_path)  # and back: biases are exact zeros, logits agree
    assert rel_err(back(ids).data, expected) < TOL


def test_transformers_to_ours_to_transformers(tmp_path):
    ref_model = save_random("gpt2", tmp_path / "a", tie_word_embeddings=False)
    hub.export(hub.load_model(tmp_path / "a"), tmp_path / "b", family="gpt2")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    ids = token_ids(61)
    assert rel_err(hf_logits(again, ids), hf_logits(ref_model, ids)) < TOL
    assert json.loads((tmp_path / "b" / "config.json").read_text())["tie_word_embeddings"] is False


def test_loading_never_holds_two_copies_of_the_weights(tmp_path):
    """tracemalloc's peak while loading: the model's float32 once plus one tensor in flight."""
    save_random("gpt2", tmp_path, n_embd=128, n_layer=4, vocab_size=2000, n_positions=128)
    tracemalloc.start()
    try:
        model = hub.load_model(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    sizes = [p.data.nbytes for p in model.parameters()]
    # the model once, plus at most one tensor in flight (and a little bookkeeping)
    assert peak < sum(sizes) + 1.2 * max(sizes), (peak, sum(sizes), max(sizes))
    assert not any(p.data.base is not None for p in model.parameters())  # no file views kept


def test_export_refuses_what_gpt2_cannot_express(tmp_path):
    cfg = GPTConfig.preset("llama-baby", vocab_size=65)
    with pytest.raises(hub.HubError, match="norm_type"):
        hub.export(GPT(cfg, rng=np.random.default_rng(0)), tmp_path, family="gpt2")


def test_original_release_layout_without_prefix_and_with_mask_buffers(tmp_path):
    """openai-community/gpt2's file names tensors without ``transformer.`` and carries each
    layer's causal mask as ``h.N.attn.bias``: the prefix is optional, the buffers hold no
    weights and are skipped."""
    from safetensors.numpy import load_file, save_file

    ref_model = save_random("gpt2", tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(2):
        renamed[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), dtype=np.float32))
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ids = token_ids(61)
    assert rel_err(hub.load_model(tmp_path)(ids).data, hf_logits(ref_model, ids)) < TOL
