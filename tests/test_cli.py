"""The command line keeps its promises: each model has its own options, ``--data`` means a corpus
everywhere, bad numbers and bad files are one line on stderr with a non-zero exit, runs of
every model can be sampled, and nothing a command starts is left running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spiral.cli import build_parser, main

pytestmark = pytest.mark.foundation
ROOT = Path(__file__).resolve().parent.parent


def spiral(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed ``spiral`` command line in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "spiral.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**os.environ, "COLUMNS": "100"})


def one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    """A user error: non-zero exit, no traceback, the message on stderr's last line."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.search(pattern, last), proc.stderr


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "gpt"
    proc = spiral("train", "gpt", "--data", "names", "--out", str(out), "--max-steps", "12",
                  "--eval-interval", "6", "--n-layers", "1", "--d-model", "32", "--n-heads", "2",
                  "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


# --- 1. `spiral sample` works on GPT runs (it used to build an MLP for every run) ---------------
def test_sample_a_gpt_run_names_and_ends_with_one_newline(gpt_run):
    config = json.loads((gpt_run / "config.json").read_text())
    assert config["model"] == "gpt" and config["model_config"]["d_model"] == 32
    proc = spiral("sample", str(gpt_run), "--n", "4", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and not proc.stdout.endswith("\n\n")
    assert len(proc.stdout.splitlines()) == 4
    assert (gpt_run / "samples.txt").read_text().endswith("\n")


def test_sample_reports_a_truncated_checkpoint_in_one_line(gpt_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((gpt_run / "config.json").read_text())
    (broken / "checkpoint.safetensors").write_bytes(
        (gpt_run / "checkpoint.safetensors").read_bytes()[:300])
    one_line_error(spiral("sample", str(broken)), r"not a readable safetensors file")
    one_line_error(spiral("train", "gpt", "--data", "names", "--out", str(broken), "--resume",
                          "--n-layers", "1", "--d-model", "32", "--n-heads", "2"),
                   r"truncated or corrupt")
    one_line_error(spiral("sample", str(tmp_path / "nowhere")), r"not a run directory")


def test_run_files_are_readable_by_others_like_any_new_file(gpt_run):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "checkpoint.safetensors", "samples.txt"):
        assert (gpt_run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# --- 2. each model has its own options ----------------------------------------------------------
def test_train_gpt_help_shows_the_gpt_options_and_preset_values():
    proc = spiral("train", "gpt", "--help")
    assert proc.returncode == 0
    assert "--d-model" in proc.stdout and "--n-heads" in proc.stdout and "--preset" in proc.stdout
    assert "--d-embed" not in proc.stdout and "--activation" not in proc.stdout
    assert "runs/gpt" in proc.stdout and "runs/mlp" not in proc.stdout
    mlp = spiral("train", "mlp", "--help").stdout
    assert "--d-embed" in mlp and "--d-model" not in mlp


def test_an_option_of_the_other_model_is_an_error():
    one_line_error(spiral("train", "gpt", "--data", "names", "--d-embed", "64"),
                   r"unrecognized arguments: --d-embed 64")
    one_line_error(spiral("train", "mlp", "--data", "names", "--n-heads", "4"),
                   r"unrecognized arguments: --n-heads 4")


# --- 3. --data is a corpus name or a text file, everywhere --------------------------------------
@pytest.mark.parametrize("command", [("train", "mlp"), ("train", "gpt"), ("tour",),
                                     ("tokenize", "train", "--out", "x.json")])
def test_data_names_a_corpus_or_a_file_everywhere(command, tmp_path):
    one_line_error(spiral(*command, "--data", str(tmp_path / "missing.txt")),
                   r"no such corpus or file: .*missing\.txt")
    one_line_error(spiral(*command, "--data", str(tmp_path)), r"is a folder")


def test_a_corpus_too_small_to_train_on_says_what_is_wrong(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ab")
    one_line_error(spiral("train", "mlp", "--data", str(tiny)), r"corpus 'tiny' is too short")
    odd = tmp_path / "odd.txt"
    odd.write_text("a" * 900 + "b" * 100)  # 'b' only in the last 10 %
    one_line_error(spiral("train", "gpt", "--data", str(odd)),
                   r"validation part .* never occur in its training part \('b'\)")


def test_run_and_tour_take_a_folder_of_corpora_as_data_dir(tmp_path):
    one_line_error(spiral("run", "1", "--data-dir", str(tmp_path / "nope")), r"is not a folder")
    args = build_parser().parse_args(["run", "1", "--data-dir", str(ROOT / "tests" / "fixtures"
                                                                   / "data")])
    assert Path(args.data_dir).is_dir()


# --- 4. the book: a clear message without MkDocs, a build that works from disk ------------------
def test_book_without_mkdocs_names_the_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mkdocs" else real(name, *a))
    assert main(["book"]) == 1
    err = capsys.readouterr().err
    assert 'pip install -e ".[docs]"' in err and len(err.strip().splitlines()) == 1


def test_book_is_built_to_work_from_disk():
    import yaml

    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert cfg["use_directory_urls"] is False  # page.html links, not folders
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in cfg["plugins"]]
    assert "offline" in plugins  # bundles the search index so search works from file://


def test_stopping_the_book_server_stops_its_child(tmp_path):
    """SIGTERM to ``spiral book --serve``'s process must not orphan the server it started."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c",
                               "import os, sys; from pathlib import Path; "
                               "from spiral.cli import _run_child; "
                               f"sys.exit(_run_child([sys.executable, '-c', {child!r}], "
                               "Path('.'), dict(os.environ)))"])
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=20) == 130
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


# --- 6. sampling options and the progress bar ----------------------------------------------------
@pytest.mark.parametrize("option,value,pattern", [
    ("--top-p", "2", r"--top-p: must be in \(0, 1\]"), ("--top-p", "0", r"must be in"),
    ("--top-k", "0", r"--top-k: must be a whole number >= 1"),
    ("--temperature", "-1", r"--temperature: must be a number >= 0"),
])
def test_bad_sampling_options_are_rejected(gpt_run, option, value, pattern):
    one_line_error(spiral("sample", str(gpt_run), option, value), pattern)


def test_an_error_closes_the_progress_bar_before_its_line(capsys, monkeypatch):
    from tqdm import tqdm

    import spiral.cli as cli

    def failing(args):
        bar = tqdm(total=10, desc="work")
        bar.update(3)
        raise ValueError("the corpus is broken")

    monkeypatch.setattr(cli, "cmd_stages", failing)
    assert main(["stages"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "spiral stages: error: the corpus is broken"
    assert not list(getattr(tqdm, "_instances", []))


# --- 10. zero, negative and absurd numbers on every numeric option -------------------------------
def _numeric_options():
    """(command words, option) for every option whose type is one of the numeric checks."""
    from spiral import cli_args as ca

    numeric = {ca.positive_int, ca.nonneg_int, ca.positive_float, ca.nonneg_float,
               ca.probability, ca.unit_interval}
    out = []

    def walk(parser, words):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    walk(sub, words + [name])
            elif getattr(action, "type", None) in numeric or \
                    getattr(action.type, "__name__", "") == "vocab_size":
                out.append((tuple(words), action.option_strings[0] if action.option_strings
                            else None, action.type))
    walk(build_parser(), [])
    return [o for o in out if o[1] is not None]


OPTIONS = _numeric_options()


def test_the_numeric_options_were_found():
    names = {(w, o) for w, o, _ in OPTIONS}
    for expected in [(("train", "gpt"), "--max-steps"), (("train", "mlp"), "--batch-size"),
                     (("sample",), "--top-p"), (("tour",), "--seed"), (("run",), "--seed"),
                     (("tokenize", "train"), "--vocab-size")]:
        assert expected in names


@pytest.mark.parametrize("words,option,kind", OPTIONS,
                         ids=[" ".join(w) + " " + o for w, o, _ in OPTIONS])
def test_every_numeric_option_rejects_nonsense(words, option, kind, capsys):
    from spiral import cli_args as ca

    bad = ["-1", "1e12", "abc", "nan"]
    if kind in (ca.positive_int, ca.positive_float, ca.unit_interval) or \
            kind.__name__ == "vocab_size":
        bad.append("0")
    if kind in (ca.probability, ca.unit_interval):
        bad.append("1.5")
    if kind in (ca.positive_int, ca.nonneg_int) or kind.__name__ == "vocab_size":
        bad.append(str(10**12))
    required = ["--data", "names"] if words[0] in ("train",) else []
    positional = ["somewhere"] if words == ("sample",) else (["1"] if words == ("run",) else [])
    for value in bad:
        if kind in (ca.positive_float, ca.nonneg_float) and value == "1e12":
            continue  # a large float is a legal (if odd) learning rate or temperature
        with pytest.raises(SystemExit) as exc:
            main([*words, *positional, *required, option, value])
        assert exc.value.code == 2, (option, value)
        err = capsys.readouterr().err
        assert f"argument {option}" in err and "Traceback" not in err, (option, value, err)


def test_zero_steps_and_zero_batch_through_the_cli():
    one_line_error(spiral("train", "mlp", "--data", "names", "--max-steps", "0"),
                   r"--max-steps: must be a whole number >= 1, got 0")
    one_line_error(spiral("train", "mlp", "--data", "names", "--batch-size", "0"),
                   r"--batch-size: must be a whole number >= 1, got 0")


def test_library_configs_reject_what_the_cli_rejects():
    from spiral.train import TrainConfig

    for bad in [dict(max_steps=0), dict(batch_size=0), dict(lr=0.0), dict(lr=float("nan")),
                dict(grad_clip=-1.0), dict(min_lr_ratio=2.0), dict(schedule="linear")]:
        with pytest.raises(ValueError, match="TrainConfig"):
            TrainConfig(**bad)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import spiral.cli as cli

    def boom(args):
        raise KeyError("surprise")

    monkeypatch.setattr(cli, "cmd_stages", boom)
    assert main(["stages"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["--debug", "stages"])


def test_a_byte_model_is_scored_on_character_ids_only_for_ascii() -> None:
    from spiral.tour import ByteModelOnCharIds

    with pytest.raises(ValueError, match="ASCII"):
        ByteModelOnCharIds(object(), ["a", "é"])
