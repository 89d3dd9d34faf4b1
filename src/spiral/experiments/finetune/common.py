"""Shared pieces of stage 15's experiments: the base, one fine-tuning run, its scores.

Every run starts from a fresh copy of the same base (the book's pretrained model, or in the
quick variants a stand-in trained in seconds in a temporary folder), fine-tunes it on the
names training split with :func:`spiral.finetune.recipe.finetune`, and is scored by the shared
evaluator on names validation (every choice), names test (once per reported method) and a
fixed slice of tiny Shakespeare's validation split (what the base knew: forgetting).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from spiral.data import get_splits
from spiral.evaluate import evaluate
from spiral.finetune.recipe import Base, FinetuneConfig, encode, finetune, load_base
from spiral.train import TrainConfig

STANDIN = "standin"  # the quick variants' base: trained here, in a temporary folder


@dataclass(frozen=True)
class RunConfig:
    """The fine-tuning loop shared by the experiments (names, byte level)."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    eval_interval: int = 50
    eval_tokens: int = 32768    # above names validation's size: every curve point is all of it
    forget_tokens: int = 8192   # Shakespeare validation tokens scored for forgetting
    score_tokens: int | None = None  # names val/test tokens scored at the end (None: all)
    weight_decay: float = 0.0
    warmup_steps: int = 20


QUICK_RUN = RunConfig(steps=10, batch_size=8, seq_len=32, eval_interval=5, eval_tokens=2048,
                      forget_tokens=1024, score_tokens=2048, warmup_steps=2)


@functools.lru_cache(maxsize=4)
def base_path(base: str, standin_steps: int = 60) -> str:
    """A folder to load the base from; ``"standin"`` trains one (once per process)."""
    if base != STANDIN:
        return base
    from spiral.models.pretrained import train_tiny_standin

    folder = Path(tempfile.mkdtemp(prefix="spiral-ft-standin-")) / "base"
    train_tiny_standin(folder, steps=standin_steps)
    return str(folder)


def fresh_base(base: str) -> Base:
    return load_base(base_path(base))


@functools.lru_cache(maxsize=4)
def _ids(split: str, corpus: str, n: int | None) -> np.ndarray:
    from spiral.tokenizers import ByteTokenizer

    text = getattr(get_splits(corpus), split)
    ids = encode(ByteTokenizer(), text, f"{corpus} {split} split")
    return ids if n is None else ids[:n]


def scores(model: Any, rc: RunConfig, test: bool = False) -> dict[str, float]:
    """Names validation (and test), and the Shakespeare slice, in nats per byte."""
    n = rc.score_tokens
    out = {"val": evaluate(model, _ids("val", "names", n)).nats,
           "forget": evaluate(model, _ids("val", "shakespeare", rc.forget_tokens)).nats}
    if test:
        out["test"] = evaluate(model, _ids("test", "names", n)).nats
    return out


def run_one(base: str, ft: FinetuneConfig, lr: float, seed: int, rc: RunConfig,
            test: bool = False, scratch: bool = False) -> dict[str, Any]:
    """Fine-tune a fresh base once; the learning curve, the scores, the tuned model.
    ``scratch``: the base's architecture at a random initialisation instead (no pretraining)."""
    b = fresh_base(base)
    if scratch:
        from spiral.models.gpt import GPT

        b = Base(GPT(b.model.config, rng=np.random.default_rng(1000 + seed)), b.tokenizer,
                 "random initialisation")
    tc = TrainConfig(max_steps=rc.steps, batch_size=rc.batch_size, seq_len=rc.seq_len, lr=lr,
                     warmup_steps=rc.warmup_steps, weight_decay=rc.weight_decay,
                     eval_interval=rc.eval_interval, eval_tokens=rc.eval_tokens, seed=seed,
                     progress=False)
    splits: Any = get_splits("names")
    if rc.score_tokens is not None:  # quick variants: a prefix of validation (bytes = tokens)
        splits = SimpleNamespace(name=splits.name, train=splits.train,
                                 val=splits.val[:rc.score_tokens])
    res = finetune(b, splits, ft, tc)
    curve = [(h["step"], h["val_loss"]) for h in res["history"]]
    return {"curve": curve, **scores(b.model, rc, test), "trainable": res["trainable"],
            "total": res["total"], "fraction": res["trainable_fraction"], "model": b.model}


def base_scores(base: str, rc: RunConfig) -> dict[str, float]:
    return scores(fresh_base(base).model, rc, test=True)


def lora(r: int = 8, targets: tuple[str, ...] | None = None, qlora: bool = False,
         alpha: float = 16.0) -> FinetuneConfig:
    cfg = FinetuneConfig("qlora" if qlora else "lora", r=r, lora_alpha=alpha)
    return cfg if targets is None else replace(cfg, target_modules=targets)
