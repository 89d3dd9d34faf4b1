"""``spiral finetune BASE --data CORPUS --method full|freeze|lora|qlora``: adapt a model.

BASE is a pretrained model's name or folder (``spiral.models.pretrained``) or a ``spiral train
gpt`` run folder. The run folder (``--out``) gets ``config.json``, ``metrics.jsonl`` (one line
per evaluation, as ``spiral train`` writes), ``checkpoint.safetensors``, ``samples.txt`` and,
for LoRA and QLoRA, ``adapter_model.safetensors`` (the adapters alone). Chapter: stage 15.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spiral import cli_args as ca


def add_parser(subparsers: Any) -> None:
    """Register ``finetune`` on the ``spiral`` command (its handler is :func:`run`)."""
    from spiral.finetune.lora import DEFAULT_TARGETS
    from spiral.finetune.memory import METHODS

    p = subparsers.add_parser(
        "finetune", help="fine-tune a pretrained GPT: full, freeze, LoRA or QLoRA (stage 15)",
        description="Adapt a pretrained model (a name, its folder, or a `spiral train gpt` run "
        "folder) to a corpus with full fine-tuning, frozen layers, LoRA or QLoRA.")
    p.add_argument("base", help="pretrained model name or folder, or a spiral train gpt run")
    p.add_argument("--data", type=ca.corpus, required=True,
                   help="corpus: names | shakespeare | PATH of a UTF-8 text file")
    p.add_argument("--method", choices=METHODS, default="lora", help="default: lora")
    p.add_argument("--out", default="runs/finetune", help="run folder (default runs/finetune)")
    p.add_argument("--r", type=ca.positive_int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=ca.positive_float, default=16.0,
                   help="LoRA alpha; the update is (alpha/r)·B·A (default 16)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help="comma-separated module names that get adapters (default: the "
                   "attention and FFN projections)")
    p.add_argument("--lora-dropout", type=ca.probability, default=0.0)
    p.add_argument("--freeze-blocks", type=ca.nonneg_int, default=None,
                   help="freeze: blocks 0..k-1 and the embeddings stay fixed (default: half)")
    p.add_argument("--lr-decay", type=ca.unit_interval, default=1.0,
                   help="discriminative rates: block l trains at lr·decay^(L-1-l) (1 = off)")
    p.add_argument("--steps", type=ca.positive_int, default=300, help="optimizer steps")
    p.add_argument("--lr", type=ca.positive_float, default=None,
                   help="peak learning rate (default 3e-4 full/freeze, 2e-3 lora/qlora)")
    p.add_argument("--batch-size", type=ca.positive_int, default=32)
    p.add_argument("--seq-len", type=ca.positive_int, default=64)
    p.add_argument("--weight-decay", type=ca.nonneg_float, default=0.0)
    p.add_argument("--eval-interval", type=ca.positive_int, default=50)
    p.add_argument("--eval-tokens", type=ca.positive_int, default=8192)
    p.add_argument("--seed", type=ca.nonneg_int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ca.add_data_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fine-tune as asked; one clear line on stderr and status 2 for bad input."""
    from spiral.data import DataError, get_splits
    from spiral.finetune.recipe import FinetuneConfig, FinetuneError, finetune, load_base
    from spiral.train import TrainConfig

    ca.apply_data_dir(args)
    try:
        base = load_base(args.base)
        n_layers = base.model.config.n_layers
        if args.seq_len > base.model.config.context_length:
            raise FinetuneError(f"--seq-len {args.seq_len} exceeds the base's context length "
                                f"{base.model.config.context_length}")
        cfg = FinetuneConfig(
            method=args.method, r=args.r, lora_alpha=args.alpha,
            target_modules=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
            lora_dropout=args.lora_dropout, lr_decay=args.lr_decay,
            freeze_blocks=n_layers // 2 if args.freeze_blocks is None else args.freeze_blocks)
        lr = args.lr or (3e-4 if args.method in ("full", "freeze") else 2e-3)
        tc = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                         lr=lr, warmup_steps=min(20, args.steps // 10),
                         weight_decay=args.weight_decay,
                         eval_interval=args.eval_interval, eval_tokens=args.eval_tokens,
                         seed=args.seed, progress=not args.no_progress)
        splits = get_splits(args.data)
        result = finetune(base, splits, cfg, tc, out_dir=args.out)
    except (FinetuneError, DataError, FileNotFoundError) as err:
        print(f"spiral finetune: {err}", file=sys.stderr)
        return 2
    print(f"{args.method}: {result['trainable']:,} parameters trained, the base has "
          f"{result['total']:,} "
          f"({100 * result['trainable_fraction']:.2f} %); validation loss "
          f"{result['val_nats']:.4f} nats; run folder {args.out}")
    return 0
