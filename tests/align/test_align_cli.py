"""``spiral align sft|rm|ppo|dpo|grpo`` writes metrics and checkpoints (stage 16)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from spiral.align.cli import add_parser
from spiral.align.models import load_policy

pytestmark = pytest.mark.stage16


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spiral")
    add_parser(p.add_subparsers(dest="command", required=True))
    return p.parse_args(argv)


def _call(argv: list[str]) -> int:
    args = _parse(argv)
    return int(args.func(args))


def test_every_step_writes_metrics_and_a_checkpoint(tmp_path: Path) -> None:
    sft = tmp_path / "sft"
    assert _call(["align", "sft", "--out", str(sft), "--steps", "3"]) == 0
    assert (sft / "metrics.jsonl").is_file()
    policy = load_policy(sft / "checkpoint.safetensors")
    assert policy.config.n_layers == 2
    ck = str(sft / "checkpoint.safetensors")
    runs = {"rm": ["--steps", "2", "--pairs", "10"], "dpo": ["--steps", "1", "--pairs", "8"],
            "grpo": ["--steps", "1"], "ppo": ["--steps", "1"]}
    for step, extra in runs.items():
        out = tmp_path / step
        assert _call(["align", step, "--out", str(out), "--sft", ck, *extra]) == 0
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert lines and all(isinstance(json.loads(x), dict) for x in lines)
        assert list(out.glob("*.safetensors"))
    rm = str(tmp_path / "rm" / "reward_model.safetensors")
    out = tmp_path / "ppo_rm"
    assert _call(["align", "ppo", "--out", str(out), "--sft", ck, "--reward-model", rm,
                  "--steps", "1"]) == 0
    assert "proxy_reward" in json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_missing_sft_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--sft"):
        _call(["align", "dpo", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        _parse(["align", "unknown", "--out", str(tmp_path)])
