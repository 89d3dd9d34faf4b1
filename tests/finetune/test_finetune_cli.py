"""``spiral finetune`` end to end on a stand-in base, its run folder, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spiral.cli import main
from spiral.finetune import load_adapter, lora_modules
from spiral.finetune.recipe import FinetuneConfig, FinetuneError, finetune, load_base

pytestmark = pytest.mark.stage15
FAST = ["--steps", "6", "--eval-interval", "3", "--seq-len", "16", "--batch-size", "4",
        "--eval-tokens", "256", "--no-progress"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spiral.models.pretrained import train_tiny_standin

    folder = tmp_path_factory.mktemp("base") / "standin"
    train_tiny_standin(folder, steps=20)
    return folder


def test_lora_run_folder_and_adapter_reload(standin: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    proc = subprocess.run([sys.executable, "-m", "spiral.cli", "finetune", str(standin),
                           "--data", "names", "--method", "lora", "--r", "2", "--out", str(out),
                           *FAST], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert "parameters trained" in proc.stdout
    for f in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "samples.txt",
              "adapter_model.safetensors"):
        assert (out / f).is_file(), f
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6] and records[-1].get("val_full")
    config = json.loads((out / "config.json").read_text())
    assert config["finetune"]["method"] == "lora" and config["finetune"]["r"] == 2
    assert 0 < config["trainable_fraction"] < 0.5
    base = load_base(standin)  # the adapter alone turns a fresh base into the tuned model
    load_adapter(base.model, out / "adapter_model.safetensors")
    assert all(m.r == 2 and m.lora_B.weight.data.any() for _, m in lora_modules(base.model))


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/base", "--data", "names"], "no pretrained model"),
    (["BASE", "--data", "names", "--method", "freeze", "--freeze-blocks", "9"],
     r"--freeze-blocks must lie in \[0, 2\]"),
    (["BASE", "--data", "names", "--seq-len", "999"], "exceeds the base's context length 32"),
    (["BASE", "--data", "names", "--targets", "q_proj"], "no Linear module matches"),
])
def test_bad_input_is_one_clear_line(standin: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                     args: list[str], message: str) -> None:
    import re

    argv = ["finetune", *FAST, *[str(standin) if a == "BASE" else a for a in args],
            "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "qlora"])
def test_each_method_changes_exactly_what_it_should(standin: Path, method: str) -> None:
    from spiral.data import get_splits
    from spiral.train import TrainConfig

    base = load_base(standin)
    before = {n: p.data.copy() for n, p in base.model.named_parameters()}
    tc = TrainConfig(max_steps=4, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=0,
                     eval_interval=4, eval_tokens=256, progress=False)
    result = finetune(base, get_splits("names"), FinetuneConfig(method, r=2, freeze_blocks=1),
                      tc)
    after = dict(base.model.named_parameters())
    changed = {n for n, w in before.items()
               if n in after and not np.array_equal(after[n].data, w)}
    if method == "full":
        assert changed == set(before)
    elif method == "freeze":
        assert changed == {n for n in before if not n.startswith(("tok_emb", "blocks.0."))}
    else:  # the base is untouched; only adapter weights (new names) moved
        assert not changed and result["trainable"] == sum(
            2 * (m.in_features + m.out_features) for _, m in lora_modules(base.model))
    assert np.isfinite(result["val_nats"])
    with pytest.raises(FinetuneError, match="unknown method"):
        FinetuneConfig("prefix")


def test_a_spiral_train_gpt_run_folder_is_a_base(tmp_path: Path) -> None:
    from spiral import checkpoint
    from spiral.models import GPT, GPTConfig

    vocab = "\nabcdefghijklmnopqrstuvwxyz"
    cfg = GPTConfig(vocab_size=len(vocab), context_length=16, n_layers=1, n_heads=2,
                    d_model=16)
    model = GPT(cfg, rng=np.random.default_rng(0))
    checkpoint.save(tmp_path / "checkpoint.safetensors", model)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model": "gpt", "model_config": cfg.to_dict(), "vocab": vocab}))
    base = load_base(tmp_path)
    ids = np.arange(8)[None] % len(vocab)
    np.testing.assert_array_equal(base.model(ids).data, model(ids).data)
    assert base.tokenizer.encode("ab\n") == [1, 2, 0]
    (tmp_path / "config.json").write_text(json.dumps(
        {"model": "mlp", "model_config": {}, "vocab": vocab}))
    with pytest.raises(FinetuneError, match="needs a GPT|does not fit"):
        load_base(tmp_path)
