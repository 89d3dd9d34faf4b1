"""Stage 13: with torch hidden, the library imports, its torch-free parts work, and the
distributed entry points fail with one clear message saying what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.stage13

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = textwrap.dedent('''
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
            return None
    sys.meta_path.insert(0, _NoTorch())
''')


def _run(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


def test_library_works_and_explains_itself_without_torch(tmp_path):
    code = textwrap.dedent('''
        import importlib, pkgutil, sys
        import spiral, spiral.distributed
        for m in pkgutil.walk_packages(spiral.distributed.__path__, "spiral.distributed."):
            importlib.import_module(m.name)           # every module imports without torch
        import spiral.models.gpt, spiral.train
        assert "torch" not in sys.modules
        from spiral.distributed.workload import TrainSpec, train_single
        train_single(TrainSpec(steps=2))               # the single-process reference runs
        from spiral.distributed.strategies import train
        try:
            train(TrainSpec(steps=1), 2, "dp")
        except ImportError as e:
            assert 'pip install -e ".[distributed]"' in str(e), e
            print("CLEAR:", e)
        else:
            raise SystemExit("no error without torch")
    ''')
    out = _run(tmp_path, ["-c", code])
    assert out.returncode == 0, out.stderr
    assert "CLEAR: spiral.distributed needs PyTorch" in out.stdout


@pytest.mark.slow  # a second pytest process: ~10 s on the shared machine
def test_torch_free_tests_pass_without_torch(tmp_path):
    tests = ["tests/distributed/test_cost_model.py",
             "tests/distributed/test_pipeline_schedules.py::test_1f1b_keeps_at_most_p_minus_s_micro_batches_in_flight",
             "tests/distributed/test_pipeline_schedules.py::test_every_micro_batch_goes_forward_then_backward_once"]
    out = _run(tmp_path, ["-m", "pytest", "-q", "-p", "no:cacheprovider", *tests])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "passed" in out.stdout
