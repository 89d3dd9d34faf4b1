"""Checkpoints: round trip, atomic writes, clear errors for truncated or foreign files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spiral import checkpoint
from spiral.checkpoint import CheckpointError
from spiral.models import MLPConfig, MLPLanguageModel
from spiral.optim import AdamW
from spiral.train import TrainConfig, train

pytestmark = pytest.mark.stage4


def trained(tmp_path: Path, seed: int = 0) -> tuple[MLPLanguageModel, AdamW, np.random.Generator]:
    rng = np.random.default_rng(seed)
    model = MLPLanguageModel(MLPConfig(vocab_size=5, n_context=2, d_embed=3, d_hidden=4,
                                       context_length=8), rng=rng)
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    ids = rng.integers(0, 5, 400)
    train(model, opt, ids, ids[:50], TrainConfig(max_steps=3, batch_size=2, seq_len=4,
                                                  eval_interval=3, progress=False), rng)
    return model, opt, rng


def test_round_trip_restores_model_optimizer_rng_and_meta(tmp_path: Path) -> None:
    model, opt, rng = trained(tmp_path)
    path = checkpoint.save(tmp_path / "c.safetensors", model, opt, step=3, rng=rng,
                           meta={"config": {"lr": 0.01}}, history=[{"step": 3}])
    m2, o2, r2 = trained(tmp_path, seed=1)
    header = checkpoint.load(path, m2, o2, r2)
    assert header["step"] == 3 and header["meta"] == {"config": {"lr": 0.01}}
    assert header["history"] == [{"step": 3}]
    for (k, a), b in zip(model.state_dict().items(), m2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    s1, s2 = opt.state_dict(), o2.state_dict()
    for i in s1["state"]:
        for name, v in s1["state"][i].items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(s2["state"][i][name]))
    assert o2.param_groups[0]["betas"] == (0.8, 0.95)
    assert rng.random() == r2.random()  # the generator continues where it was saved


def test_no_pickle_inside(tmp_path: Path) -> None:
    model, opt, rng = trained(tmp_path)
    raw = checkpoint.save(tmp_path / "c.safetensors", model, opt, rng=rng).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and b"pickle" not in raw[: 8 + header_len]


def test_truncated_file_gives_clear_error(tmp_path: Path) -> None:
    model, opt, rng = trained(tmp_path)
    path = checkpoint.save(tmp_path / "c.safetensors", model, opt, rng=rng)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(path, model)


def test_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    model, _, _ = trained(tmp_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"PK\x03\x04 this is a zip file, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        checkpoint.load(junk, model)
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(other))
    with pytest.raises(CheckpointError, match="not a spiral checkpoint"):
        checkpoint.load(other, model)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.safetensors", model)


def test_checkpoint_of_another_model_is_rejected(tmp_path: Path) -> None:
    model, _, _ = trained(tmp_path)
    path = checkpoint.save(tmp_path / "c.safetensors", model)
    bigger = MLPLanguageModel(MLPConfig(vocab_size=5, n_context=2, d_embed=3, d_hidden=6),
                              rng=np.random.default_rng(0))
    with pytest.raises(CheckpointError, match="does not fit this model.*hidden.0.weight"):
        checkpoint.load(path, bigger)


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model, opt, rng = trained(tmp_path)
    path = checkpoint.save(tmp_path / "c.safetensors", model, opt, step=1, rng=rng)
    before = path.read_bytes()
    import safetensors.numpy

    def crash(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, model, opt, step=2, rng=rng)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left
