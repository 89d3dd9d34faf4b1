"""spiral.models.pretrained: save/load round trip, and a clear refusal for every way a
folder can be wrong (checksum, missing file, config, tokenizer, registry pin)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from spiral.models import pretrained as P
from spiral.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.stage14


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> P.Pretrained:
    return P.train_tiny_standin(tmp_path_factory.mktemp("standin") / "tiny", seed=0, steps=30)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _resum(folder: Path) -> None:
    """Rewrite SHA256SUMS as an editor who also updates the sums would."""
    (folder / P.SUMS).write_text("".join(f"{P._sha256(folder / f)}  {f}\n" for f in P.FILES))


def test_standin_trains_saves_and_loads(standin: P.Pretrained) -> None:
    """It learned something (validation below the uniform ln 256) and its record says how."""
    assert standin.record["history"][-1]["val_loss"] < math.log(256) - 1.0
    assert standin.config.n_kv_heads == 2 and standin.tokenizer.vocab_size == 256
    assert set(standin.sha256) == set(P.FILES)
    ids = np.array([standin.tokenizer.encode("To be, or not")])
    assert standin.model(ids).shape == (1, ids.shape[1], 256)


def test_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    from spiral.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("abcdefg")
    model = GPT(GPTConfig.preset("llama-baby", tok.vocab_size, n_layers=1, n_kv_heads=1,
                                 tie_weights=False), rng=np.random.default_rng(3))
    P.save_pretrained(tmp_path / "m", model, tok, {"note": "random"})
    back = P.load_pretrained(tmp_path / "m", expected_config={"n_kv_heads": 1})
    ids = np.array([tok.encode("abcabcgf")])
    np.testing.assert_array_equal(back.model(ids).data, model(ids).data)
    assert back.tokenizer.itos == tok.itos and back.record == {"note": "random"}


def test_found_by_name_in_the_models_directory(standin: P.Pretrained, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _copy(standin.path, tmp_path / "tiny-standin")
    monkeypatch.setenv("SPIRAL_MODELS_DIR", str(tmp_path))
    assert P.load_pretrained("tiny-standin").sha256 == standin.sha256
    with pytest.raises(P.PretrainedError, match="no pretrained model 'nope'"):
        P.load_pretrained("nope")


def test_changed_weights_fail_the_checksum(standin: P.Pretrained, tmp_path: Path) -> None:
    folder = _copy(standin.path, tmp_path / "m")
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-3] ^= 0x01  # one bit of one weight
    (folder / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(P.PretrainedError, match="checksum mismatch for model.safetensors"):
        P.load_pretrained(folder)


@pytest.mark.parametrize("missing", ["tokenizer.json", "SHA256SUMS", "model.safetensors"])
def test_missing_file_is_named(standin: P.Pretrained, tmp_path: Path, missing: str) -> None:
    folder = _copy(standin.path, tmp_path / "m")
    (folder / missing).unlink()
    with pytest.raises(P.PretrainedError, match=f"missing file {missing}"):
        P.load_pretrained(folder)


def test_config_mismatches_are_refused(standin: P.Pretrained, tmp_path: Path) -> None:
    with pytest.raises(P.PretrainedError, match="config mismatch: d_model is 32, expected 64"):
        P.load_pretrained(standin.path, expected_config={"d_model": 64})
    for edit, message in (({"d_model": 64}, "weights do not fit"),
                          ({"vocab_size": 300}, "the tokenizer has 256"),
                          ({"n_experts": 4}, "unknown GPTConfig field"),
                          ({"n_kv_heads": 3}, "not a multiple")):
        folder = _copy(standin.path, tmp_path / f"m{len(list(tmp_path.iterdir()))}")
        meta = json.loads((folder / "config.json").read_text())
        meta["model"].update(edit)
        (folder / "config.json").write_text(json.dumps(meta))
        with pytest.raises(P.PretrainedError, match="checksum mismatch for config.json"):
            P.load_pretrained(folder)
        _resum(folder)  # sums updated too: the config check itself must refuse it
        with pytest.raises(P.PretrainedError, match=message):
            P.load_pretrained(folder)


def test_registry_pins_the_sums(standin: P.Pretrained, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    _copy(standin.path, tmp_path / "pinned")
    monkeypatch.setenv("SPIRAL_MODELS_DIR", str(tmp_path))
    monkeypatch.setitem(P.REGISTRY, "pinned", P._sha256(tmp_path / "pinned" / P.SUMS))
    P.load_pretrained("pinned")
    meta = json.loads((tmp_path / "pinned" / "training.json").read_text())
    meta["seed"] = 99  # an edit with matching sums: only the registry can catch it
    (tmp_path / "pinned" / "training.json").write_text(json.dumps(meta))
    _resum(tmp_path / "pinned")
    with pytest.raises(P.PretrainedError, match="not the one registered"):
        P.load_pretrained("pinned")


def test_the_books_model_is_committed_pinned_and_loads() -> None:
    """The book's model ships in models/, its SHA256SUMS matches the registry's pin, and it
    builds the byte-level Llama-style GPT its record describes."""
    from spiral.models.pretrained import BOOK_MODEL, REGISTRY, load_pretrained

    assert BOOK_MODEL in REGISTRY
    p = load_pretrained(BOOK_MODEL)
    assert p.config.vocab_size == 256 and p.tokenizer.vocab_size == 256
    assert p.config.norm_type == "rmsnorm" and p.config.ffn_type == "swiglu"
    assert p.model.num_parameters() == p.record["n_parameters"]
    assert p.record["corpus"] == "shakespeare"
