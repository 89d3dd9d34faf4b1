"""Stage 13: the command-line entry point (spawned workers, the --check against one process)."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("torch")

from spiral.distributed import launch  # noqa: E402

pytestmark = pytest.mark.stage13


def test_launch_trains_and_checks_against_one_process(capsys):
    summary = launch.main(["--nproc", "2", "--parallel", "zero2", "--steps", "3", "--dtype",
                           "float64", "--data", "synthetic", "--check"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == 0 and out["max_param_gap"] < 1e-10 and out["tokens_per_s"] > 0


def test_add_arguments_composes_with_another_parser():
    parser = launch.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--parallel", "dp_tp", "--nproc", "4"])
    assert launch.spec_from_args(args).tp == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--parallel", "fsdp"])


@pytest.mark.slow  # three interpreters import torch: ~25 s on the shared machine
def test_torchrun_starts_the_same_training():
    import os
    import subprocess
    import sys

    from spiral.distributed.runtime import free_port
    from spiral.distributed.workload import TrainSpec, train_single

    def launch_once() -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "spiral.distributed.launch", "--parallel", "zero3", "--steps", "2",
               "--data", "synthetic", "--dtype", "float64"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))

    out = launch_once()
    if out.returncode != 0 and "SIGABRT" in out.stderr:
        # once in a full CI run rank 0 aborted inside the rendezvous (the free port taken
        # between probing it and binding it); a fresh port is the same test, not a weaker one
        out = launch_once()
    assert out.returncode == 0, out.stderr[:3000] + "\n...\n" + out.stderr[-2000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert sorted(x["rank"] for x in lines) == [0, 1]
    expected = train_single(TrainSpec(steps=2))["losses"][-1]
    assert all(abs(x["final_loss"] - expected) < 1e-12 for x in lines)


def test_train_gpt_options_compose_with_the_spiral_cli(capsys):
    """`spiral train gpt --nproc N --parallel ...` goes through the real command line."""
    from spiral.cli import build_parser

    args = build_parser().parse_args(["train", "gpt", "--data", "shakespeare", "--nproc", "2",
                                      "--parallel", "zero2", "--max-steps", "2", "--n-layers",
                                      "2", "--d-model", "16", "--batch-size", "4"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["parallel"] == "zero2" and out["final_loss"] > 0
