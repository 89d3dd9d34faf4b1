"""Shared pieces of stage 17's experiments: the base model, a same-shape random model, load.

``base`` names the model the full variants measure (``"spiral-book"``, the book's pretrained
model, or any pretrained folder); ``"standin"`` trains the tiny stand-in in a temporary
folder in seconds (the quick variants). Speed and memory do not depend on the weights'
values, so those experiments build a random model of the base's shape (with a longer
context where the experiment sweeps lengths). Chapter: stage 17.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from spiral.models.gpt import GPT, GPTConfig
from spiral.models.pretrained import STANDIN, Pretrained, load_pretrained, train_tiny_standin


def load_base(base: str, seed: int = 0, steps: int = 60) -> Pretrained:
    """The pretrained base model, or a freshly trained stand-in for ``base="standin"``."""
    if base == "standin":
        folder = Path(tempfile.mkdtemp(prefix="spiral-s17-")) / "standin"
        return train_tiny_standin(folder, seed=seed, steps=steps)
    return load_pretrained(base)


def base_config(base: str) -> GPTConfig:
    if base == "standin":
        return GPTConfig(vocab_size=256, **STANDIN)  # type: ignore[arg-type]
    return load_pretrained(base).config


def random_model(config: GPTConfig, seed: int = 0, **overrides: Any) -> GPT:
    """A model of the config's shape (with overrides) and random weights, in eval mode."""
    m = GPT(replace(config, **overrides), rng=np.random.default_rng(seed))
    m.eval()
    return m


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run timings on one BLAS thread: on a shared two-core machine a second BLAS thread
    waits for a core another process holds, and an uncached forward over a few hundred
    positions of a small model can take tens of times longer than on one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def load_average() -> list[float]:
    """The machine's 1-, 5- and 15-minute load averages: timings on a shared machine are
    labelled with them."""
    return [float(x) for x in os.getloadavg()]


def train_draft(target: GPTConfig, steps: int, seed: int = 0, corpus: str = "shakespeare",
                d_model: int = 16, n_layers: int = 1, n_heads: int = 2) -> GPT:
    """A small byte-level draft model of the target's vocabulary and context, trained for
    ``steps`` steps on the corpus's training split (the same text as the target)."""
    from spiral.data import get_splits
    from spiral.tokenizers import ByteTokenizer
    from spiral.train import TrainConfig, train

    tok = ByteTokenizer()
    splits = get_splits(corpus)
    train_ids = np.array(tok.encode(splits.train), dtype=np.int64)
    val_ids = np.array(tok.encode(splits.val), dtype=np.int64)
    cfg = replace(target, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=None,
                  ffn_hidden=None)
    model = GPT(cfg, rng=np.random.default_rng(seed))
    tc = TrainConfig(max_steps=steps, batch_size=16, seq_len=min(cfg.context_length, 64),
                     lr=3e-3, warmup_steps=min(10, steps // 5), eval_interval=steps,
                     eval_tokens=4096, seed=seed, progress=False)
    train(model, model.configure_optimizer(lr=tc.lr), train_ids, val_ids, tc,
          np.random.default_rng(seed))
    model.eval()
    return model


def val_prompts(n: int, length: int, rng: np.random.Generator,
                corpus: str = "shakespeare") -> list[list[int]]:
    """``n`` prompts of ``length`` bytes from random places in the validation split."""
    from spiral.data import get_splits
    from spiral.tokenizers import ByteTokenizer

    ids = ByteTokenizer().encode(get_splits(corpus).val)
    starts = rng.integers(0, len(ids) - length, n)
    return [list(ids[s:s + length]) for s in starts]
