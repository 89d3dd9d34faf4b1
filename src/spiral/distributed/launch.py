"""The command line of distributed training: ``spiral train gpt --nproc N --parallel ...``.

``add_arguments(parser)`` adds the options to any argparse parser (the ``spiral`` CLI's
``train gpt`` subcommand, or this module's own), ``run(args)`` trains and prints one line
per strategy. Two ways to start the processes, as torch users expect:

    python -m spiral.distributed.launch --nproc 4 --parallel dp_tp      # spawns 4 workers
    torchrun --nproc-per-node 2 -m spiral.distributed.launch --parallel dp   # one per rank

Under ``torchrun`` each process joins the job from the environment (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) and runs :func:`spiral.distributed.strategies.run_rank` itself.
A crashed or hung rank ends the run with an error naming it (``--timeout`` seconds at most).
Chapter: stage 13.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Any

import numpy as np

from spiral import cli_args as ca
from spiral.distributed.strategies import STRATEGIES, run_rank, train
from spiral.distributed.workload import TrainSpec, train_single

__all__ = ["add_parallel_arguments", "add_arguments", "spec_from_args", "run", "run_train_gpt",
           "main"]


def add_parallel_arguments(parser: argparse.ArgumentParser) -> Any:
    """Only the parallelism options (no model or data sizes): safe to add to a parser that
    already has its own ``--steps``, ``--batch-size`` or ``--data``."""
    g = parser.add_argument_group("distributed training (stage 13)")
    g.add_argument("--nproc", type=ca.positive_int, default=1, help="worker processes (default 1)")
    g.add_argument("--parallel", choices=STRATEGIES, default="dp",
                   help="dp | tp | pp | zero1 | zero2 | zero3 | dp_tp (tp inside dp)")
    g.add_argument("--tp", type=ca.positive_int, default=2, help="tensor-parallel width for dp_tp")
    g.add_argument("--pp-schedule", choices=("naive", "gpipe", "1f1b"), default="1f1b",
                   help="pipeline schedule for --parallel pp (default 1f1b)")
    g.add_argument("--micro-batches", type=ca.positive_int, default=4)
    g.add_argument("--allreduce", choices=("naive", "ring", "bucketed"), default="bucketed")
    g.add_argument("--timeout", type=ca.positive_float, default=600.0,
                   help="seconds before giving up")
    g.add_argument("--check", action="store_true",
                   help="also train in one process and report the largest parameter gap")
    return g


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The distributed options and the run's sizes (``python -m spiral.distributed.launch``)."""
    g = add_parallel_arguments(parser)
    parser.set_defaults(nproc=2)
    g.add_argument("--steps", type=int, default=20)
    g.add_argument("--batch-size", type=int, default=8, help="the GLOBAL batch")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    g.add_argument("--data", choices=("shakespeare", "synthetic"), default="shakespeare")
    return parser


def spec_from_args(args: argparse.Namespace) -> TrainSpec:
    spec = TrainSpec(steps=args.steps, batch_size=args.batch_size, dtype=args.dtype,
                     data=args.data, schedule=args.pp_schedule,
                     micro_batches=args.micro_batches,
                     allreduce=args.allreduce, tp=args.tp)
    if args.data == "shakespeare":
        spec = replace(spec, vocab_size=65, context_length=32, d_model=64, n_heads=4)
    return spec


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train as the options say; print and return a summary."""
    spec = spec_from_args(args)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        from spiral.distributed.runtime import init_from_env

        init_from_env(args.timeout)
        out = run_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), spec,
                       args.parallel)
        summary = {"rank": out["rank"], "final_loss": out["losses"][-1]}
    else:
        result = train(spec, args.nproc, args.parallel, timeout_s=args.timeout,
                       collective_timeout_s=min(args.timeout, 120.0))
        summary = {"parallel": args.parallel, "nproc": args.nproc,
                   "final_loss": result["losses"][-1],
                   "tokens_per_s": round(result["tokens_per_s"], 1),
                   "load_avg_1min": result["load_avg"][0]}
        if args.check:
            ref = train_single(spec)["state"]
            summary["max_param_gap"] = max(float(np.max(np.abs(result["state"][k] - ref[k])))
                                           for k in ref)
    # one write of line and newline: every rank prints to the same stdout, and with
    # unbuffered output (PYTHONUNBUFFERED) print's two writes let another rank's line
    # slip in between them; a single write under PIPE_BUF bytes to a pipe is atomic
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return summary


def run_train_gpt(args: argparse.Namespace) -> int:
    """``spiral train gpt --nproc N --parallel ...``: the recipe's model sizes, global batch,
    steps, peak learning rate and weight decay on N processes, on the corpus's characters.

    What the distributed run does not do yet (said, not silently dropped): warm-up and
    cosine decay (the learning rate is constant), gradient clipping, periodic evaluation and
    the run directory's checkpoints.
    """
    from spiral import data
    from spiral.models.gpt import GPTConfig
    from spiral.recipes.gpt import RECIPES
    from spiral.tokenizers.char import CharTokenizer

    if args.data != "shakespeare":
        raise SystemExit("distributed training reads tiny Shakespeare only (--data shakespeare)")
    vocab = CharTokenizer.from_text(data.get_splits("shakespeare").train).vocab_size
    model = GPTConfig.preset(args.preset, vocab, **{k: getattr(args, k) for k in (
        "context_length", "n_layers", "n_heads", "d_model") if getattr(args, k, None)})
    recipe = {**RECIPES[args.preset], **{k: getattr(args, k) for k in (
        "max_steps", "batch_size", "lr", "weight_decay") if getattr(args, k, None)}}
    spec = TrainSpec(vocab_size=vocab, context_length=model.context_length,
                     n_layers=model.n_layers, n_heads=model.n_heads, d_model=model.d_model,
                     batch_size=recipe["batch_size"], steps=recipe["max_steps"],
                     lr=recipe["lr"], weight_decay=recipe["weight_decay"], seed=args.seed,
                     dtype="float32", data="shakespeare", schedule=args.pp_schedule,
                     micro_batches=args.micro_batches, tp=args.tp, allreduce=args.allreduce)
    print("note: constant learning rate, no clipping, no evaluation or checkpoints yet")
    result = train(spec, args.nproc, args.parallel, timeout_s=args.timeout,
                   collective_timeout_s=min(args.timeout, 120.0))
    print(json.dumps({"parallel": args.parallel, "nproc": args.nproc,
                      "final_loss": result["losses"][-1],
                      "tokens_per_s": round(result["tokens_per_s"], 1),
                      "load_avg_1min": result["load_avg"][0]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spiral.distributed.launch",
                                     description="Train a GPT on several processes.")
    run(add_arguments(parser).parse_args(argv))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
