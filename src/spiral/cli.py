"""The ``spiral`` command: stages, run, book, tour (and the subcommands stages add)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spiral import cli_args
from spiral import stages as stages_mod

# Subcommands contributed by later stages: module path -> function(subparsers) -> None.
EXTENSIONS = (
    "spiral.tokenizers.cli:add_subparser",
    "spiral.train_cli:add_subparser",
    "spiral.align.cli:add_parser",
    "spiral.inference.serve_cli:add_parser",
    "spiral.finetune.cli:add_parser",
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def stage_rows() -> list[tuple[Any, ...]]:
    """(number, title, spiral, reading minutes, status dict) for every stage."""
    from spiral.experiments.framework import discover

    with_experiments = {e.stage for e in discover().values()}
    return [(s.number, s.title, s.spiral, s.reading_minutes,
             stages_mod.status(s, with_experiments)) for s in stages_mod.STAGES]


def stages_markdown() -> str:
    """The README's table of what exists for each stage (``spiral stages --markdown``)."""
    lines = ["| # | stage | spiral | what exists today |", "|---:|---|---:|---|"]
    for number, title, spiral, _, st in stage_rows():
        have = [k for k in ("chapter", "code", "experiments", "tests") if st[k]]
        lines.append(f"| {number} | {title} | {spiral} | {', '.join(have) or 'planned'} |")
    return "\n".join(lines)


def cmd_stages(args: argparse.Namespace) -> int:
    if args.markdown:
        print(stages_markdown())
        return 0
    mark = {True: "yes", False: "-"}
    rows = [[n, title, spiral, f"{minutes} min", mark[st["chapter"]], mark[st["code"]],
             mark[st["experiments"]], mark[st["tests"]], mark[st["coverage"]]]
            for n, title, spiral, minutes, st in stage_rows()]
    print(_table(
        ["#", "stage", "spiral", "reading", "chapter", "code", "experiments", "tests", "coverage"],
        rows,
    ))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spiral.experiments.framework import discover, execute

    cli_args.apply_data_dir(args)
    found = discover()
    if args.stage == "all":
        chosen = sorted(found.values(), key=lambda e: (e.stage, e.name))
    else:
        try:
            number = int(args.stage)
            stages_mod.get(number)
        except ValueError:
            print(f"spiral run: STAGE must be a number 1-18 or 'all', got {args.stage!r}",
                  file=sys.stderr)
            return 2
        chosen = sorted((e for e in found.values() if e.stage == number), key=lambda e: e.name)
    if args.only:
        chosen = [e for e in chosen if e.name in args.only]
    if not chosen:
        print(f"spiral run: no experiments for stage {args.stage} yet", file=sys.stderr)
        return 1
    variant = "quick" if args.quick else "full"
    out = Path(args.out)
    rows = []
    with tqdm(chosen, desc=f"spiral run {args.stage} ({variant})", unit="exp") as bar:
        for exp in bar:
            record = execute(exp, variant, seed=args.seed, out=out, check=not args.no_check)
            summary = exp.summary(record["results"]) if exp.summary else []
            text = "; ".join(f"{k}: {v}" for k, v in summary)
            rows.append([exp.stage, exp.name, f"{record['provenance']['wall_time_s']:.1f}s",
                         text])
    print(_table(["stage", "experiment", "time", "summary"], rows))
    print(f"results and figures written under {out}/")
    return 0


def cmd_book(args: argparse.Namespace) -> int:
    root = stages_mod.repo_root()
    if root is None:
        raise ValueError("run this from a clone of the spiral repository (mkdocs.yml needed)")
    if importlib.util.find_spec("mkdocs") is None:
        raise ValueError("the book needs MkDocs, which the docs extra installs: "
                         "pip install -e \".[docs]\" -c constraints.txt")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    if args.serve:
        cmd = [sys.executable, "-m", "mkdocs", "serve", "--strict", "--dev-addr", args.addr]
        print(f"serving the book at http://{args.addr}/ (Ctrl-C stops the server)")
        return _run_child(cmd, root, env)
    site = Path(args.site_dir).resolve()
    rc = _run_child([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                     str(site)], root, env)
    if rc == 0:
        print(f"built the book: open {site / 'index.html'} in a browser (it works from disk, "
              "search included), or preview it with `spiral book --serve`")
    return rc


def _run_child(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run ``cmd`` and never leave it behind: Ctrl-C or SIGTERM stop the child too."""
    import signal

    child = subprocess.Popen(cmd, cwd=cwd, env=env)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)


def cmd_tour(args: argparse.Namespace) -> int:
    from spiral import cli_args
    from spiral.tour import DEFAULT_CORPORA, run_tour

    cli_args.apply_data_dir(args)
    run_tour(quick=args.quick, out=Path(args.out), seed=args.seed,
             corpora=tuple(args.data or DEFAULT_CORPORA), progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spiral",
        description="spiral: building language models from first principles.",
    )
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error (also: SPIRAL_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("stages", help="list the 18 stages and what exists for each",
                       description="List the 18 stages: title, spiral, reading time and "
                       "which of chapter, code, experiments, tests and coverage map exist.")
    s.add_argument("--markdown", action="store_true",
                   help="print the README's table of what exists for each stage")
    s.set_defaults(func=cmd_stages)

    r = sub.add_parser("run", help="run a stage's experiments (figures + results JSON)",
                       description="Run every experiment of a stage (or of all stages), "
                       "write results.json and figures per experiment, print a summary.")
    r.add_argument("stage", metavar="STAGE", help="stage number 1-18, or 'all'")
    r.add_argument("--quick", action="store_true", help="the fast variant used by the tests")
    r.add_argument("--out", default="spiral-results",
                   help="output folder (default: spiral-results; the book reads docs/results)")
    r.add_argument("--seed", type=cli_args.nonneg_int, default=0,
                   help="seed of the experiment's generator")
    r.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    r.add_argument("--no-check", action="store_true",
                   help="do not assert the chapter's claims on the results")
    cli_args.add_data_dir(r)
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("book", help="build (or serve) the book from the committed results",
                       description="Build the book with mkdocs --strict from docs/ and the "
                       "committed results; --serve starts a local preview server.")
    b.add_argument("--serve", action="store_true", help="serve with live reload")
    b.add_argument("--addr", default="127.0.0.1:8000",
                   help="address for --serve (default 127.0.0.1:8000)")
    b.add_argument("--site-dir", default="site", help="output folder for the built site")
    b.set_defaults(func=cmd_book)

    t = sub.add_parser("tour", help="the ladder of models, scored by one evaluator",
                       description="Train the curriculum's ladder of models on tiny "
                       "Shakespeare and names, score each with the shared evaluator on the "
                       "same validation split, print a leaderboard and write a report.")
    t.add_argument("--quick", action="store_true",
                   help="a small, fast tour (about a minute): short training, not results")
    t.add_argument("--out", default="spiral-tour",
                   help="folder for tour.html, tour.md, tour.json (default: spiral-tour)")
    t.add_argument("--seed", type=cli_args.nonneg_int, default=0)
    t.add_argument("--data", nargs="+", type=cli_args.corpus, metavar="CORPUS",
                   help="corpora to climb: names | shakespeare | PATH of a UTF-8 text file "
                        "(default: names and shakespeare)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    cli_args.add_data_dir(t)
    t.set_defaults(func=cmd_tour)

    for spec in EXTENSIONS:
        module_name, func_name = spec.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # that stage has not landed yet
            raise
        getattr(module, func_name)(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False) or os.environ.get("SPIRAL_DEBUG"))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"spiral {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `spiral stages | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # every user error is one line; the traceback behind --debug
        _close_progress_bars()
        if debug:
            raise
        print(f"spiral {args.command}: error: {_describe(err)}", file=sys.stderr)
        return 1


def _close_progress_bars() -> None:
    """Close bars left open by an exception, so the error line is not drawn into one."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _describe(err: BaseException) -> str:
    if isinstance(err, MemoryError):
        return ("out of memory: the batch, context or model is too large for this machine "
                "(try a smaller --batch-size or --context-length)")
    text = str(err) or type(err).__name__
    from spiral.data import DataError

    if isinstance(err, (DataError, ValueError, FileNotFoundError)):
        return text
    name = type(err).__name__
    hint = "" if name.endswith("Error") and "Checkpoint" in name else \
        " (run with --debug for the traceback)"
    return f"{text}{hint}" if "Checkpoint" in name else f"{name}: {text}{hint}"


if __name__ == "__main__":
    sys.exit(main())
