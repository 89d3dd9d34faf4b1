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
