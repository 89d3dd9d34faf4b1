"""The shared training loop: a golden run against torch, accumulation, metrics, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from spiral import checkpoint
from spiral.data import sample_batch
from spiral.evaluate import windows_of
from spiral.models import MLPConfig, MLPLanguageModel
from spiral.nn import param_groups
from spiral.optim import AdamW
from spiral.train import TrainConfig, TrainState, lr_multiplier, train

pytestmark = pytest.mark.stage4

V = 9
STREAM = np.random.default_rng(123).integers(0, V, 3000)
TRAIN, VAL = STREAM[:2500], STREAM[2500:2700]


def make(seed: int = 0, dtype: type = np.float64, dropout: float = 0.0
         ) -> tuple[MLPLanguageModel, AdamW, np.random.Generator]:
    rng = np.random.default_rng(seed)
    cfg = MLPConfig(vocab_size=V, n_context=3, d_embed=4, d_hidden=16, n_layers=2,
                    dropout=dropout, context_length=32)
    model = MLPLanguageModel(cfg, rng=rng, dtype=dtype)
    opt = AdamW(param_groups(model, 0.1), lr=1e-2)
    return model, opt, rng


CFG = TrainConfig(max_steps=6, batch_size=4, seq_len=8, lr=1e-2, warmup_steps=2,
                  eval_interval=1, eval_tokens=200, grad_clip=0.5, progress=False)


def test_golden_losses_match_torch_with_copied_weights() -> None:
    torch = pytest.importorskip("torch")
    model, opt, rng = make()
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    state = train(model, opt, TRAIN, VAL, CFG, rng)

    decay = [sd[k] for k in ("hidden.0.weight", "hidden.1.weight", "head.weight")]
    keep = [p for k, p in sd.items() if k not in ("hidden.0.weight", "hidden.1.weight",
                                                   "head.weight")]
    topt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": keep, "weight_decay": 0.0}], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, lr_multiplier(CFG))

    def torch_logits(x: np.ndarray) -> torch.Tensor:
        ctx = torch.from_numpy(np.ascontiguousarray(model.contexts(x)))
        h = sd["embedding.weight"][ctx].reshape(*x.shape, -1)
        for i in range(2):
            h = torch.tanh(h @ sd[f"hidden.{i}.weight"].T + sd[f"hidden.{i}.bias"])
        return h @ sd["head.weight"].T + sd["head.bias"]

    batch_rng = np.random.default_rng(0)
    MLPLanguageModel(model.config, rng=batch_rng, dtype=np.float64)  # same draws as make()
    for record in state.history:
        x, y = sample_batch(TRAIN, CFG.batch_size, CFG.seq_len, batch_rng)
        loss = torch.nn.functional.cross_entropy(torch_logits(x).reshape(-1, V),
                                                 torch.from_numpy(y).reshape(-1))
        topt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(sd.values()), CFG.grad_clip)
        topt.step()
        sched.step()
        with torch.no_grad():  # the evaluator's windows, scored by the torch copy
            nll = [torch.nn.functional.cross_entropy(
                torch_logits(w[:, :-1]).reshape(-1, V), torch.from_numpy(w[:, 1:]).reshape(-1),
                reduction="sum").item() for w in windows_of(VAL, 32)]
        assert record["train_loss"] == pytest.approx(loss.item(), abs=1e-10)
        assert record["val_loss"] == pytest.approx(sum(nll) / (len(VAL) - 1), abs=1e-10)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.data, sd[name].detach().numpy(), atol=1e-10, err_msg=name)


def test_gradient_accumulation_equals_one_big_batch() -> None:
    # 2 micro-batches of 4 == 1 batch of 8 when the batches hold the same windows
    a_model, a_opt, a_rng = make(seed=1)
    b_model, b_opt, b_rng = make(seed=1)
    cfg_a = TrainConfig(max_steps=3, batch_size=4, seq_len=8, grad_accum=2, eval_interval=3,
                        eval_tokens=100, progress=False, warmup_steps=0)
    cfg_b = TrainConfig(max_steps=3, batch_size=8, seq_len=8, grad_accum=1, eval_interval=3,
                        eval_tokens=100, progress=False, warmup_steps=0)
    # (two draws of 4 window starts give the same numbers as one draw of 8)
    train(a_model, a_opt, TRAIN, VAL, cfg_a, a_rng)
    train(b_model, b_opt, TRAIN, VAL, cfg_b, b_rng)
    for (name, p), q in zip(a_model.named_parameters(), b_model.parameters()):
        np.testing.assert_allclose(p.data, q.data, atol=1e-10, err_msg=name)


def test_metrics_jsonl_and_run_files(tmp_path: Path) -> None:
    model, opt, rng = make(dtype=np.float32)
    cfg = TrainConfig(max_steps=5, batch_size=4, seq_len=8, eval_interval=2, eval_tokens=100,
                      progress=False)
    train(model, opt, TRAIN, VAL, cfg, rng, out_dir=tmp_path)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 5]
    for r in lines:
        assert {"step", "train_loss", "val_loss", "lr", "tokens_per_s"} <= set(r)
        assert np.isfinite(r["val_loss"]) and r["tokens_per_s"] > 0
    assert (tmp_path / "checkpoint.safetensors").is_file()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_is_bit_identical(tmp_path: Path, dropout: float) -> None:
    cfg = TrainConfig(max_steps=8, batch_size=4, seq_len=8, eval_interval=2, eval_tokens=100,
                      checkpoint_interval=4, progress=False)
    full_model, full_opt, full_rng = make(seed=3, dtype=np.float32, dropout=dropout)
    full = train(full_model, full_opt, TRAIN, VAL, cfg, full_rng, out_dir=tmp_path / "a")

    m1, o1, r1 = make(seed=3, dtype=np.float32, dropout=dropout)
    train(m1, o1, TRAIN, VAL, cfg, r1, out_dir=tmp_path / "b", until=4)  # "interrupted"
    m2, o2, r2 = make(seed=99, dtype=np.float32, dropout=dropout)  # a fresh process
    header = checkpoint.load(tmp_path / "b" / "checkpoint.safetensors", m2, o2, r2)
    assert header["step"] == 4
    state = TrainState(step=header["step"], history=header["history"])
    resumed = train(m2, o2, TRAIN, VAL, cfg, r2, out_dir=tmp_path / "b", state=state)
    for (name, p), q in zip(full_model.named_parameters(), m2.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    strip = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k != "tokens_per_s"}
                     for r in resumed.history]


def test_cli_train_and_sample_write_a_run_directory(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("spiral.cli")
    from spiral.cli import main

    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat on the mat. " * 40)
    out = tmp_path / "run"
    assert main(["train", "mlp", "--data", str(text), "--out", str(out), "--max-steps", "4",
                 "--eval-interval", "2", "--batch-size", "2", "--seq-len", "8",
                 "--d-hidden", "8", "--no-progress"]) == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "samples.txt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["d_hidden"] == 8 and config["train_config"]["max_steps"] == 4
    assert "validation:" in capsys.readouterr().out
    assert main(["sample", str(out), "--prompt", "the ", "--max-new-tokens", "20",
                 "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the ") and len(first.rstrip("\n")) == 24
    main(["sample", str(out), "--prompt", "the ", "--max-new-tokens", "20", "--seed", "1"])
    assert capsys.readouterr().out == first  # seeded


def test_fit_text_trains_the_recipe_on_any_text() -> None:
    from spiral.evaluate import evaluate
    from spiral.recipes.mlp import fit_text
    from spiral.tokenizers.char import CharTokenizer

    text = "abcabcabd " * 200
    rng = np.random.default_rng(0)
    model = fit_text(text, rng, train_overrides={"max_steps": 30, "batch_size": 8,
                                                 "seq_len": 16, "eval_interval": 30})
    ids = CharTokenizer.from_text(text).encode_array(text[:300])
    assert model.config.vocab_size == 5
    assert evaluate(model, ids).nats < np.log(5) - 0.3  # it learned something


def test_checkpoint_interval_is_honoured_between_evaluations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the save sat inside the evaluation branch, so checkpoint_interval=3 with
    eval_interval=5 over 12 steps wrote one checkpoint (step 12) instead of four."""
    saved: list[int] = []
    real_save = checkpoint.save

    def spy(*args, **kwargs):
        saved.append(kwargs["step"])
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", spy)
    model, opt, rng = make()
    cfg = TrainConfig(max_steps=12, batch_size=2, seq_len=8, eval_interval=5, eval_tokens=50,
                      checkpoint_interval=3, progress=False)
    train(model, opt, TRAIN, VAL, cfg, rng, out_dir=tmp_path)
    assert saved == [3, 6, 9, 12]
    assert checkpoint.read(tmp_path / "checkpoint.safetensors")[1]["step"] == 12


def test_resume_with_a_changed_learning_rate_is_refused(tmp_path: Path) -> None:
    """Regression: resuming with a new lr kept the checkpoint's lr (the optimizer state
    restores it) while config.json recorded the new one. A resumed run continues the same
    run, so a changed setting is now an error, raised before any step."""
    cfg = TrainConfig(max_steps=8, batch_size=2, seq_len=8, lr=1e-2, eval_interval=2,
                      eval_tokens=50, checkpoint_interval=2, progress=False)
    meta = {"train_config": cfg.to_dict(), "model": "mlp"}
    m1, o1, r1 = make(seed=5)
    train(m1, o1, TRAIN, VAL, cfg, r1, out_dir=tmp_path, checkpoint_meta=meta, until=4)
    ckpt = tmp_path / "checkpoint.safetensors"

    new_cfg = dataclasses.replace(cfg, lr=0.5)
    new_meta = {"train_config": new_cfg.to_dict(), "model": "mlp"}
    m2, o2, r2 = make(seed=5)
    header = checkpoint.load(ckpt, m2, o2, r2)  # the recipe's resume path
    state = TrainState(step=header["step"], history=header["history"])
    with pytest.raises(ValueError, match=r"train_config\.lr: 0\.01 -> 0\.5"):
        train(m2, o2, TRAIN, VAL, new_cfg, r2, out_dir=tmp_path, state=state,
              checkpoint_meta=new_meta)
    from spiral.train import resume

    with pytest.raises(ValueError, match="max_steps"):
        resume(ckpt, m2, o2, r2, meta={"train_config": dataclasses.replace(cfg, max_steps=9)
                                       .to_dict(), "model": "mlp"})
    # the same settings (progress bar and evaluation cadence may change) resume fine
    quiet = dataclasses.replace(cfg, eval_interval=4, progress=False)
    m3, o3, r3 = make(seed=99)
    state = resume(ckpt, m3, o3, r3, meta={"train_config": quiet.to_dict(), "model": "mlp"})
    assert state.step == 4
    train(m3, o3, TRAIN, VAL, quiet, r3, out_dir=tmp_path, state=state,
          checkpoint_meta={"train_config": quiet.to_dict(), "model": "mlp"})


def test_recipe_resume_with_a_new_lr_leaves_config_json_alone(tmp_path: Path) -> None:
    """The user-facing path (`spiral train mlp --resume --lr ...`): refused, and config.json
    still records the settings the checkpoint was trained with."""
    from spiral.recipes.mlp import train_mlp

    text = tmp_path / "tiny.txt"
    text.write_text("the cat sat on the mat. " * 40)
    out = tmp_path / "run"
    small = {"max_steps": 4, "eval_interval": 2, "checkpoint_interval": 2, "batch_size": 2,
             "seq_len": 8, "lr": 0.01}
    train_mlp(str(text), out, model_overrides={"d_hidden": 8}, train_overrides=small,
              progress=False)
    before = (out / "config.json").read_text()
    with pytest.raises(ValueError, match=r"lr: 0\.01 -> 0\.5"):
        train_mlp(str(text), out, model_overrides={"d_hidden": 8}, resume=True,
                  train_overrides={**small, "lr": 0.5}, progress=False)
    assert (out / "config.json").read_text() == before
    # without --resume the same directory starts a new run, under the new settings
    fresh = train_mlp(str(text), out, model_overrides={"d_hidden": 8},
                      train_overrides={**small, "lr": 0.5}, progress=False)
    assert [r["step"] for r in fresh["history"]] == [2, 4]
    assert json.loads((out / "config.json").read_text())["train_config"]["lr"] == 0.5


def test_resumed_run_does_not_duplicate_metrics(tmp_path: Path) -> None:
    """Regression: steps between the last checkpoint and the interruption were re-run after
    resume and their metrics.jsonl lines appended a second time."""
    cfg = TrainConfig(max_steps=8, batch_size=2, seq_len=8, eval_interval=1, eval_tokens=50,
                      checkpoint_interval=4, progress=False)
    m1, o1, r1 = make(seed=2)
    train(m1, o1, TRAIN, VAL, cfg, r1, out_dir=tmp_path, until=6)  # checkpoint at 4, logs 1-6
    m2, o2, r2 = make(seed=2)
    header = checkpoint.load(tmp_path / "checkpoint.safetensors", m2, o2, r2)
    train(m2, o2, TRAIN, VAL, cfg, r2, out_dir=tmp_path,
          state=TrainState(step=header["step"], history=header["history"]))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == list(range(1, 9))


def test_a_names_run_killed_mid_way_resumes_bit_identically(tmp_path: Path) -> None:
    """Stage 14's long names runs checkpoint every few steps; one generator drives init,
    dropout and batches, so a run stopped part-way and started again (a new process, a new
    session) ends on exactly the numbers of one that never stopped."""
    from dataclasses import asdict

    from spiral.experiments.architectures.names import LLAMA
    from spiral.experiments.transformer.names import Config, _train_seed

    cfg = asdict(Config(n_layers=1, d_model=16, n_heads=2, context_length=16, max_steps=12,
                        batch_size=4, lr=1e-2, dropout=0.3, warmup_steps=2, windows=(16,)))
    job = {"config": cfg, "seed": 5, "score_test": False, "model_overrides": LLAMA,
           "checkpoint_interval": 4}
    whole = _train_seed({**job, "ckpt_dir": str(tmp_path / "a")})
    part = _train_seed({**job, "ckpt_dir": str(tmp_path / "b"), "until": 8})
    assert part == {"seed": 5, "step": 8}  # stopped early: nothing scored
    resumed = _train_seed({**job, "ckpt_dir": str(tmp_path / "b")})
    assert resumed["val"] == whole["val"] and resumed["train_loss"] == whole["train_loss"]
    with pytest.raises(ValueError, match="other settings"):  # a changed setting is refused
        _train_seed({**job, "ckpt_dir": str(tmp_path / "b"), "seed": 6})


def test_names_job_records_the_training_text_loss_and_backfills_old_records(
        tmp_path: Path) -> None:
    """Stage 14's names runs record the finished model's eval-mode loss on training text (from
    the final checkpoint), and a cached record written before that field gains it."""
    from dataclasses import asdict

    from spiral.experiments.architectures.names import EXPERIMENT, _job, _names_config

    job = {"config": asdict(_names_config(EXPERIMENT.quick, 8, 6, 0.0)), "seed": 0, "score_test": False,
           "cache": str(tmp_path / "trial.json"), "ckpt_dir": str(tmp_path / "ckpt")}
    first = _job(job)
    assert first["train_eval"] is not None and np.isfinite(first["train_eval"])
    old = {k: v for k, v in first.items() if k != "train_eval"}
    (tmp_path / "trial.json").write_text(json.dumps(old))
    assert _job(job)["train_eval"] == first["train_eval"]  # recomputed from the checkpoint
    assert "train_eval" in json.loads((tmp_path / "trial.json").read_text())


def test_names_final_at_the_trial_seed_reuses_the_trial_run(tmp_path: Path) -> None:
    """The chosen trial (seed 0) and final seed 0 are the same run: the final resumes the
    trial's finished checkpoint and only scores the test split."""
    from dataclasses import replace

    from spiral.experiments.architectures.names import EXPERIMENT, run

    c = replace(EXPERIMENT.quick, contexts=(8,), lengths=(6,), dropouts=(0.0,),
                cache_dir=str(tmp_path / "runs"), ckpt_dir=str(tmp_path / "ckpt"))
    r = run(c, np.random.default_rng(0))
    assert r["finals"][0]["val"] == r["trials"][0]["val"]
    assert np.isfinite(r["finals"][0]["test"])
    assert not (tmp_path / "ckpt" / "final-T8-S6-d0-s0").exists()
    assert (tmp_path / "ckpt" / "final-T8-S6-d0-s1").is_dir()


def test_names_choices_are_made_on_validation_in_two_steps(tmp_path: Path) -> None:
    """Context and length are chosen together at the first dropout, then the dropout at that
    pair; no trial scores the test split. Cached trial records stand in for trained runs,
    so the choice logic is checked against values it could get wrong."""
    from dataclasses import replace

    from spiral.experiments.architectures.names import EXPERIMENT, run

    c = replace(EXPERIMENT.quick, contexts=(8, 16), lengths=(6, 9), dropouts=(0.0, 0.1),
                seeds=(0,), cache_dir=str(tmp_path / "runs"))
    vals = {"T8-S6-d0": 2.5, "T8-S9-d0": 2.4, "T16-S6-d0": 2.3, "T16-S9-d0": 2.6,
            "T16-S6-d0.1": 2.2}
    (tmp_path / "runs").mkdir()
    for tag, v in vals.items():
        T = int(tag.split("-")[0][1:])
        rec = {"context": T, "seed": 0, "val": v, "test": None, "n_parameters": 1,
               "train_eval": v - 0.1}
        (tmp_path / "runs" / f"trial-{tag}-s0.json").write_text(json.dumps(rec))
    r = run(c, np.random.default_rng(0))
    assert (r["chosen_context"], r["chosen_steps"], r["chosen_dropout"]) == (16, 6, 0.1)
    assert all(t["test"] is None for t in r["trials"])
    assert [t["steps"] for t in r["trials"]] == [6, 9, 6, 9, 6]
    assert r["trial_gaps"]["T16-S6-d0_1"] == pytest.approx(0.1)
    ref = r["gpt2_reference"]  # stage 8's block, trained beside the trials, no test scored
    assert ref["block"] == "gpt2" and ref["test"] is None and np.isfinite(ref["val"])
    EXPERIMENT.check(r)
