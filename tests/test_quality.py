"""Quality gates: ruff and mypy clean, the README's test command is what CI runs, the CLI
answers --help everywhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spiral.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.foundation


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n#{2,3} ", text.split("## Two commands", 1)[1], maxsplit=1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "spiral tour" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    proc = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_clean():
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:  # type: ignore[attr-defined]
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: spiral" in capsys.readouterr().out


def test_stages_lists_all_eighteen(capsys):
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^{n}\s", out, re.M) for n in range(1, 19))


def test_run_rejects_bad_stage(capsys):
    assert main(["run", "nineteen"]) == 2
    assert "STAGE must be" in capsys.readouterr().err


def test_tour_quick_writes_a_report(tmp_path, capsys):
    assert main(["tour", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "names" in out and "shakespeare" in out and "uniform" in out
    assert (tmp_path / "tour.md").is_file() and (tmp_path / "tour.json").is_file()
    # a real report: one self-contained page with the leaderboard drawn, each rung's settings,
    # time and sample, and why the tour's GPT recipe is not the chapter's best
    import html
    import json

    page = html.unescape((tmp_path / "tour.html").read_text())
    assert "data:image/png;base64," in page and "<link" not in page and "src='http" not in page
    assert "Why the GPT" in page and "nanoGPT's baby recipe" in page
    md = (tmp_path / "tour.md").read_text()
    assert "![leaderboard](leaderboard.png)" in md and "Trained in" in md
    assert (tmp_path / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0)
    os.umask(umask)
    for f in tmp_path.iterdir():  # written like any new file (mkstemp alone would give 0600)
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name

    rows = json.loads((tmp_path / "tour.json").read_text())["rows"]
    for corpus in ("names", "shakespeare"):
        sub = {r["model"]: r for r in rows if r["corpus"] == corpus}
        assert sub["bigram (add-1)"]["parameters"] > 0
        assert all(r["settings"] and r["sample"].strip() for r in sub.values())
        # every model beats the uniform rung on the same validation split
        uniform = sub["uniform over the vocabulary"]["val_nats"]
        assert all(r["val_nats"] < uniform for m, r in sub.items() if m != "uniform over the vocabulary")


# Third-party modules the library may import without declaring them as runtime dependencies:
# optional accelerators with a fallback, and book tooling that only the docs extra uses.
OPTIONAL_IMPORTS = {
    "scipy": ("src/spiral/nn/kernels.py",         # fast erf; falls back to math.erf
              "src/spiral/experiments/inference/speculative_sweep.py"),  # chi-square (test extra)
    "yaml": "src/spiral/coverage.py",             # coverage maps (docs extra)
    "markdown": "src/spiral/coverage.py",         # heading slugs (docs extra)
    "mkdocs": "src/spiral/book.py",
    "huggingface_hub": "src/spiral/hub/api.py",   # downloads by hub id (hub extra)
    "transformers": ("src/spiral/experiments/hub/parity.py",  # the reference (hub extra)
                     "src/spiral/experiments/inference/torch_ratio.py"),
    "tokenizers": "src/spiral/experiments/hub/parity.py",
    "torch": ("src/spiral/distributed/runtime.py",        # the transport (distributed extra)
              "src/spiral/profiling/memory_witness.py",   # stage 11's torch witness
              "src/spiral/experiments/memory/torch_compare.py",
              "src/spiral/experiments/memopt/lean.py",      # stage 12's lean step beside torch
              "src/spiral/experiments/inference/torch_ratio.py"),  # stage 17's PyTorch ratio
    # the benchmarks' PyTorch twin of our GPT, read from the checkout (stage 11's comparison)
    "benchmarks": "src/spiral/experiments/memory/torch_compare.py",
    "starlette": ("src/spiral/inference/serve.py",          # `spiral serve` (serve extra)
                  "src/spiral/inference/serve_cli.py"),
    "uvicorn": "src/spiral/inference/serve_cli.py",
    "gguf": "src/spiral/quant/gguf_io.py",  # GGUF export (gguf extra)
}


def test_library_imports_only_declared_runtime_dependencies():
    import ast
    import sys

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower().replace("-", "_") for d in deps}
    stdlib = set(sys.stdlib_module_names)
    for path in sorted((ROOT / "src" / "spiral").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == "spiral" or top in declared:
                    continue
                rel = str(path.relative_to(ROOT))
                allowed = OPTIONAL_IMPORTS.get(top, ())
                assert rel in ((allowed,) if isinstance(allowed, str) else allowed), (
                    f"{rel} imports {top!r}, which is not a runtime dependency in pyproject.toml"
                )


def test_the_library_never_imports_the_experiments():
    """Arrows run one way: autograd <- nn <- models <- train <- experiments <- cli. Only the
    command line (the top layer) may import :mod:`spiral.experiments`; recipes the CLI needs
    live in the library (:mod:`spiral.recipes`)."""
    import ast

    allowed = {"src/spiral/cli.py"}
    offenders = []
    for path in sorted((ROOT / "src" / "spiral").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("src/spiral/experiments/") or rel in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "spiral.experiments" or n.startswith("spiral.experiments.")
                   for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, "library modules import spiral.experiments: " + ", ".join(offenders)


def test_experiments_live_in_concept_subpackages():
    """No experiment module sits flat in spiral/experiments/ (only the framework does), and
    every subpackage is named for a concept, never a stage number."""
    folder = ROOT / "src" / "spiral" / "experiments"
    flat = sorted(p.name for p in folder.glob("*.py") if p.name not in ("__init__.py",
                                                                          "framework.py"))
    assert flat == [], flat
    for sub in folder.iterdir():
        if sub.is_dir() and sub.name != "__pycache__":
            assert (sub / "__init__.py").is_file(), sub
            assert not re.search(r"\d", sub.name), sub.name


def test_readme_stage_table_is_what_exists_today():
    """The README says plainly what exists; `spiral stages --markdown` is the source."""
    from spiral.cli import stages_markdown

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- stages:begin -->\n", 1)[1].split("\n<!-- stages:end -->", 1)[0]
    assert block == stages_markdown(), "README's stage table is stale: paste `spiral stages --markdown`"


def test_readme_command_table_lists_every_subcommand():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## The command line", 1)[1].split("\n## ", 1)[0]
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:  # type: ignore[attr-defined]
        assert f"`spiral {name}" in table, f"README's command table leaves out `spiral {name}`"


def _readme_pythons() -> tuple[str, list[str]]:
    """(the floor, the minor versions checked) as the README states them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"Python ≥ (3\.\d+(?:\.\d+)?) \(checked for ((?:3\.\d+, )*3\.\d+ and 3\.\d+)",
                  text)
    assert m, "the README names its Python floor and the versions checked"
    return m.group(1), re.findall(r"3\.\d+", m.group(2))


def test_python_floor_agrees_with_the_readme():
    import tomllib

    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == f">={_readme_pythons()[0]}"


def _python_to_check(minor: str) -> str:
    floor = _readme_pythons()[0]
    return floor if floor.startswith(minor + ".") else minor


@pytest.mark.slow
def test_pins_resolve_for_every_python_the_readme_names(tmp_path):
    """Every pin in constraints.txt has a wheel for each Python the README promises (asks the
    package index, the versions side by side; in CI an unreachable index fails the test)."""
    pins = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    procs = {}
    for minor in _readme_pythons()[1]:
        python = _python_to_check(minor)
        procs[python] = subprocess.Popen(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--no-deps", "--only-binary=:all:", "--python-version", python, "--target",
             str(tmp_path / python), "-q", *pins],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failures = {}
    for python, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            failures[python] = err
    offline = all("connection" in e.lower() or "network" in e.lower()
                  for e in failures.values())
    if failures and offline and not os.environ.get("CI"):
        pytest.skip("no package index reachable (run in CI)")
    assert not failures, {p: e[-1500:] for p, e in failures.items()}


def test_test_files_have_unique_basenames():
    """The tests run in pytest's default import mode (no packages), where two test files of
    the same name in different folders stop the whole collection."""
    from collections import Counter

    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], names.most_common(3)


def test_readme_tour_time_is_the_committed_runs():
    """The README's tour time is read from the committed full tour, not typed from memory."""
    import json

    report = json.loads((ROOT / "docs" / "results" / "tour" / "tour.json").read_text())
    assert not report["quick"]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"It took {report['wall_s'] / 60:.1f} minutes" in text
