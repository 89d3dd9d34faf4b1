"""Stage 12: a float16 run's loss scaler is saved in the checkpoint and restored on resume."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from spiral import checkpoint
from spiral.amp import GradScaler
from spiral.checkpoint import CheckpointError
from spiral.models.gpt import GPT, GPTConfig
from spiral.optim import AdamW
from spiral.train import TrainConfig, TrainState, resume, train

pytestmark = pytest.mark.stage12

V = 11
STREAM = np.random.default_rng(7).integers(0, V, 2000)
TRAIN, VAL = STREAM[:1600], STREAM[1600:1800]


def make(seed: int = 0) -> tuple[GPT, AdamW, np.random.Generator]:
    rng = np.random.default_rng(seed)
    cfg = GPTConfig(vocab_size=V, context_length=8, n_layers=1, n_heads=2, d_model=16)
    model = GPT(cfg, rng=rng)
    return model, AdamW(model.parameters(), lr=1e-2), rng


def cfg(precision: str = "float16", steps: int = 10) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=4, seq_len=8, eval_interval=5,
                       eval_tokens=64, checkpoint_interval=steps // 2, warmup_steps=0,
                       progress=False, precision=precision)


def test_float16_resume_restores_the_scaler_and_is_bit_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a scale that overflows float16 (so steps are skipped and it backs off) and a short
    # growth interval (so it grows again): every part of the state changes within 10 steps
    monkeypatch.setattr("spiral.train.GradScaler",
                        partial(GradScaler, init_scale=2.0**40, growth_interval=3))
    c = cfg()
    m0, o0, r0 = make(seed=3)
    straight = train(m0, o0, TRAIN, VAL, c, r0, out_dir=tmp_path / "a")

    m1, o1, r1 = make(seed=3)
    half = train(m1, o1, TRAIN, VAL, c, r1, out_dir=tmp_path / "b", until=5)  # "interrupted"
    saved = checkpoint.read_header(tmp_path / "b" / "checkpoint.safetensors")["scaler"]
    assert saved == half.scaler
    # the scaler has state worth saving: it backed off from 2^40, and counts clean steps
    assert saved["scale"] < 2.0**40 and saved["growth_interval"] == 3

    m2, o2, r2 = make(seed=99)  # a fresh process
    state = resume(tmp_path / "b" / "checkpoint.safetensors", m2, o2, r2)
    assert state.step == 5 and state.scaler == saved
    resumed = train(m2, o2, TRAIN, VAL, c, r2, out_dir=tmp_path / "b", state=state)
    for (name, p), q in zip(m0.named_parameters(), m2.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert resumed.scaler == straight.scaler
    final = checkpoint.read_header(tmp_path / "b" / "checkpoint.safetensors")["scaler"]
    assert final == straight.scaler

    # a fresh scale instead of the saved one is refused (it would change the run)
    m3, o3, r3 = make(seed=99)
    header = checkpoint.load(tmp_path / "b" / "checkpoint.safetensors", m3, o3, r3)
    with pytest.raises(CheckpointError, match="no loss-scaler state"):
        train(m3, o3, TRAIN, VAL, c, r3, state=TrainState(step=header["step"]))


def test_scaler_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    model, opt, _ = make()
    s = GradScaler(init_scale=2.0**10, growth_interval=7)
    s._growth_tracker = 3
    checkpoint.save(tmp_path / "c.safetensors", model, opt, scaler=s)
    t = GradScaler()
    checkpoint.load(tmp_path / "c.safetensors", model, opt, scaler=t)
    assert t.state_dict() == s.state_dict()
    assert t.state_dict() == {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                              "growth_interval": 7, "_growth_tracker": 3}
    # a disabled scaler (float32, bfloat16) writes nothing
    checkpoint.save(tmp_path / "d.safetensors", model, opt, scaler=GradScaler(enabled=False))
    assert checkpoint.read_header(tmp_path / "d.safetensors")["scaler"] is None


def test_precision_mismatch_on_load_is_a_clear_error(tmp_path: Path) -> None:
    model, opt, _ = make()
    checkpoint.save(tmp_path / "f16.safetensors", model, opt, scaler=GradScaler())
    checkpoint.save(tmp_path / "f32.safetensors", model, opt)
    with pytest.raises(CheckpointError, match="saved by a float16 run"):
        checkpoint.load(tmp_path / "f16.safetensors", model, opt,
                        scaler=GradScaler(enabled=False))
    with pytest.raises(CheckpointError, match="no loss-scaler state"):
        checkpoint.load(tmp_path / "f32.safetensors", model, opt, scaler=GradScaler())
    # without a scaler argument the weights load as before (evaluation, sampling, a new run)
    checkpoint.load(tmp_path / "f16.safetensors", model, opt)


def test_resuming_in_another_precision_is_refused(tmp_path: Path) -> None:
    c16 = cfg("float16", steps=4)
    m, o, r = make()
    train(m, o, TRAIN, VAL, c16, r, out_dir=tmp_path, until=2)
    state = resume(tmp_path / "checkpoint.safetensors", *make()[:2], np.random.default_rng(0))
    m2, o2, r2 = make()
    with pytest.raises(CheckpointError, match="resume it with precision 'float16'"):
        train(m2, o2, TRAIN, VAL, cfg("float32", steps=4), r2, state=state)
    # and with the run's config as meta, the changed setting is named before anything loads
    meta16 = {"train_config": c16.to_dict()}
    meta32 = {"train_config": cfg("float32", steps=4).to_dict()}
    m4, o4, r4 = make()
    train(m4, o4, TRAIN, VAL, c16, r4, out_dir=tmp_path / "m", checkpoint_meta=meta16, until=2)
    with pytest.raises(ValueError, match="precision: 'float16' -> '\\(absent\\)'"):
        resume(tmp_path / "m" / "checkpoint.safetensors", *make(), meta=meta32)
