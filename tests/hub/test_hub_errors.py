"""Bad checkpoints are one clear HubError each; nothing in a checkpoint is ever executed."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")
from spiral import hub  # noqa: E402
from spiral.data import DataError  # noqa: E402
from tests.hub.conftest import save_random  # noqa: E402

pytestmark = pytest.mark.stage8


@pytest.fixture
def folder(tmp_path):
    save_random("gpt2", tmp_path)
    return tmp_path


def test_truncated_safetensors(folder):
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    with pytest.raises(hub.HubError, match="truncated or corrupt.*ends at byte"):
        hub.load_model(folder)


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:5], "shorter than the 8-byte header"),
    (lambda b: (10**9).to_bytes(8, "little") + b[8:], "does not fit"),
    (lambda b: b[:8] + b"\xff" * 16 + b[24:], "unreadable header"),
])
def test_corrupted_safetensors(folder, damage, match):
    f = folder / "model.safetensors"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(hub.HubError, match=match):
        hub.load_model(folder)


def test_missing_shard(tmp_path):
    save_random("gpt2", tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    shards[1].unlink()
    with pytest.raises(hub.HubError, match=f"shard {shards[1].name} .* is missing"):
        hub.load_model(tmp_path / "sharded")


@pytest.mark.parametrize("edit,match", [
    ({"model_type": "mistral"}, "model_type 'mistral' is not supported"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx = True"),
    ({"activation_function": "relu"}, "activation_function = 'relu'"),
    ({"mystery_switch": 3}, "field 'mystery_switch'"),
    ({"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}, "field 'auto_map'"),  # remote code
    ({"n_embd": 48}, "shape"),
])
def test_unsupported_or_inconsistent_config(folder, edit, match):
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(hub.HubError, match=match):
        hub.load_model(folder)


def test_pickle_weights_are_never_loaded(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(hub.HubError, match="pickle-based weights, which spiral.hub never loads"):
        hub.load_model(folder)


def test_a_tensor_nobody_reads_is_an_error(folder):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors["transformer.h.0.attn.extra.weight"] = tensors["transformer.ln_f.weight"]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(hub.HubError, match="extra.weight"):
        hub.load_model(folder)


def test_offline_hub_id_is_a_data_error(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(DataError, match="could not download some-org/some-model.*offline"):
        hub.load("some-org/some-model")


def test_a_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(hub.HubError, match="not a model folder"):
        hub.load_model(tmp_path / "a" / "b" / "c")
