"""The ``spiral`` command: stages, run, book, tour (and the subcommands stages add)."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spiral import stages as stages_mod

# Subcommands contributed by later stages: module path -> function(subparsers) -> None.
EXTENSIONS = (
    "spiral.tokenizers.cli:add_subparser",
    "spiral.train_cli:add_subparser",
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_stages(args: argparse.Namespace) -> int:
    rows = []
    for s in stages_mod.STAGES:
        st = stages_mod.status(s)
        mark = {True: "yes", False: "-"}
        rows.append([
            s.number, s.title, s.spiral, f"{s.reading_minutes} min",
            mark[st["chapter"]], mark[st["code"]], mark[st["experiments"]], mark[st["tests"]],
            mark[st["coverage"]],
        ])
    print(_table(
        ["#", "stage", "spiral", "reading", "chapter", "code", "experiments", "tests", "coverage"],
        rows,
    ))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spiral.experiments.framework import discover, execute

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
    for exp in tqdm(chosen, desc=f"spiral run {args.stage} ({variant})", unit="exp"):
        record = execute(exp, variant, seed=args.seed, out=out, check=not args.no_check)
        summary = exp.summary(record["results"]) if exp.summary else []
        text = "; ".join(f"{k}: {v}" for k, v in summary)
        rows.append([exp.stage, exp.name, f"{record['provenance']['wall_time_s']:.1f}s", text])
    print(_table(["stage", "experiment", "time", "summary"], rows))
    print(f"results and figures written under {out}/")
    return 0


def cmd_book(args: argparse.Namespace) -> int:
    root = stages_mod.repo_root()
    if root is None:
        print("spiral book: run this from a clone of the spiral repository (mkdocs.yml needed)",
              file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "mkdocs", "serve" if args.serve else "build", "--strict"]
    if not args.serve:
        cmd += ["--site-dir", str(Path(args.site_dir).resolve())]
    return subprocess.call(cmd, cwd=root)


def cmd_tour(args: argparse.Namespace) -> int:
    from spiral.tour import run_tour

    if args.data:
        os.environ["SPIRAL_DATA_DIR"] = str(Path(args.data).expanduser().resolve())
    run_tour(quick=args.quick, out=Path(args.out), seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spiral",
        description="spiral: building language models from first principles.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("stages", help="list the 18 stages and what exists for each",
                       description="List the 18 stages: title, spiral, reading time and "
                       "which of chapter, code, experiments, tests and coverage map exist.")
    s.set_defaults(func=cmd_stages)

    r = sub.add_parser("run", help="run a stage's experiments (figures + results JSON)",
                       description="Run every experiment of a stage (or of all stages), "
                       "write results.json and figures per experiment, print a summary.")
    r.add_argument("stage", metavar="STAGE", help="stage number 1-18, or 'all'")
    r.add_argument("--quick", action="store_true", help="the fast variant used by the tests")
    r.add_argument("--out", default="spiral-results",
                   help="output folder (default: spiral-results; the book reads docs/results)")
    r.add_argument("--seed", type=int, default=0, help="seed of the experiment's generator")
    r.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    r.add_argument("--no-check", action="store_true",
                   help="do not assert the chapter's claims on the results")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("book", help="build (or serve) the book from the committed results",
                       description="Build the book with mkdocs --strict from docs/ and the "
                       "committed results; --serve starts a local preview server.")
    b.add_argument("--serve", action="store_true", help="serve with live reload")
    b.add_argument("--site-dir", default="site", help="output folder for the built site")
    b.set_defaults(func=cmd_book)

    t = sub.add_parser("tour", help="the ladder of models, scored by one evaluator",
                       description="Train the curriculum's ladder of models on tiny "
                       "Shakespeare and names, score each with the shared evaluator on the "
                       "same validation split, print a leaderboard and write a report.")
    t.add_argument("--quick", action="store_true", help="a small, fast tour (seconds)")
    t.add_argument("--out", default="spiral-tour", help="folder for tour.md and tour.json")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data", metavar="PATH",
                   help="folder holding the corpora (overrides SPIRAL_DATA_DIR)")
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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `spiral stages | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a clear one-line error instead of a traceback
        from spiral.data import DataError

        if isinstance(err, (DataError, ValueError, FileNotFoundError)):
            print(f"spiral {args.command}: error: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
