"""Adapters saved alone (safetensors, peft key names) round-trip; the wrong base is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spiral.finetune import (
    AdapterMismatchError,
    inject_lora,
    load_adapter,
    lora_modules,
    save_adapter,
)
from spiral.models import GPT, GPTConfig

pytestmark = pytest.mark.stage15


def gpt(d_model: int = 16, n_layers: int = 2) -> GPT:
    cfg = GPTConfig(vocab_size=11, context_length=8, n_layers=n_layers, n_heads=2,
                    d_model=d_model)
    return GPT(cfg, rng=np.random.default_rng(0))


def trained_adapter(model: GPT) -> None:
    inject_lora(model, r=4, lora_alpha=8, rng=np.random.default_rng(1))
    rng = np.random.default_rng(2)
    for _, m in lora_modules(model):
        m.lora_A.weight.data[...] += 0.1 * rng.standard_normal(m.lora_A.weight.shape)
        m.lora_B.weight.data[...] = 0.1 * rng.standard_normal(m.lora_B.weight.shape)


def test_round_trip_onto_a_fresh_base(tmp_path: Path) -> None:
    from safetensors import safe_open

    ids = np.random.default_rng(3).integers(0, 11, (2, 8))
    model = gpt()
    trained_adapter(model)
    want = model(ids).data
    path = save_adapter(model, tmp_path / "adapter_model.safetensors")
    with safe_open(str(path), framework="numpy") as f:
        keys = set(f.keys())
        config = json.loads(f.metadata()["spiral_lora"])
    assert "base_model.model.blocks.0.attn.qkv_proj.lora_A.weight" in keys
    assert "base_model.model.blocks.1.ffn.proj.lora_B.weight" in keys
    assert len(keys) == 2 * 8 and config["r"] == 4 and config["lora_alpha"] == 8.0
    n_numbers = sum(4 * (m.in_features + m.out_features) for _, m in lora_modules(model))
    assert path.stat().st_size < 4 * n_numbers + 4096  # adapters only, not the base

    fresh = gpt()  # the same pretrained base, no adapters yet: load injects them
    assert not np.allclose(fresh(ids).data, want)
    names = load_adapter(fresh, path)
    assert len(names) == 8
    np.testing.assert_array_equal(fresh(ids).data, want)


def test_load_into_existing_adapters_overwrites_them(tmp_path: Path) -> None:
    model = gpt()
    trained_adapter(model)
    path = save_adapter(model, tmp_path / "a.safetensors")
    other = gpt()
    inject_lora(other, r=4, lora_alpha=8, rng=np.random.default_rng(9))
    load_adapter(other, path)
    for (_, a), (_, b) in zip(lora_modules(model), lora_modules(other)):
        np.testing.assert_array_equal(a.lora_A.weight.data, b.lora_A.weight.data)
        np.testing.assert_array_equal(a.lora_B.weight.data, b.lora_B.weight.data)


def test_wrong_base_is_a_clear_error(tmp_path: Path) -> None:
    model = gpt()
    trained_adapter(model)
    path = save_adapter(model, tmp_path / "a.safetensors")
    with pytest.raises(AdapterMismatchError, match=r"shape \(48, 16\), this base has \(96, 32\)"):
        load_adapter(gpt(d_model=32), path)
    with pytest.raises(AdapterMismatchError, match="does not have"):
        load_adapter(gpt(n_layers=1), path)
    wrong_rank = gpt()
    inject_lora(wrong_rank, r=2, rng=np.random.default_rng(0))
    with pytest.raises(AdapterMismatchError, match="different rank"):
        load_adapter(wrong_rank, path)


def test_bad_files_and_states(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    with pytest.raises(FileNotFoundError):
        load_adapter(gpt(), tmp_path / "missing.safetensors")
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(AdapterMismatchError, match="not a spiral LoRA adapter"):
        load_adapter(gpt(), tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="no LoRA modules"):
        save_adapter(gpt(), tmp_path / "x.safetensors")
