"""Shared plumbing of the stage-1 experiments: the corpora as n-gram data, and tuning.

Not an experiment itself (no ``EXPERIMENT``). tiny Shakespeare is one continuous stream
(90 % train / 10 % validation, tuned on the last 10 % of the training region); names are a
list of deduplicated names split 80/10/10 with a seed (each name is padded with begin
markers and scored through its end marker). Hyperparameters (add-k's k, Kneser–Ney's
discount, the order) are chosen on the tune split by models fit on the rest of the training
region; validation is reported once. Chapter: stages/stage-01-ngrams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral import data
from spiral.ngram import NGramLM

K_GRID: tuple[float, ...] = tuple(float(k) for k in np.logspace(-4, 1, 11))
D_GRID: tuple[float, ...] = (0.4, 0.55, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class Corpus:
    """Splits of one corpus as n-gram data (a str stream or a list of names)."""

    name: str
    train: Any
    val: Any
    fit: Any  # the training region minus the tune split
    tune: Any


def load(name: str, seed: int = 42, max_chars: int | None = None) -> Corpus:
    """tiny Shakespeare (deterministic split; ``max_chars`` keeps a prefix of each split for
    quick runs) or names (deduplicated, shuffled with ``seed``, 80/10/10)."""
    if name == "names":
        s = data.names_splits(seed=seed)
        cut = len(s.train) - int(round(0.1 * len(s.train)))
        return Corpus("names", s.train, s.val, s.train[:cut], s.train[cut:])
    sp = data.get_splits(name)
    train, val = sp.train, sp.val
    if max_chars is not None:
        train, val = train[:max_chars], val[: max_chars // 9]
    cut = int(len(train) * 0.9)
    return Corpus(sp.name, train, val, train[:cut], train[cut:])


def tune(
    fitted: NGramLM, tune_data: Any, smoothing: str, grid: tuple[float, ...]
) -> tuple[float, list[float]]:
    """The grid value with the lowest tune cross-entropy, and the whole tune curve (nats)."""
    curve = []
    for v in grid:
        lm = fitted.with_smoothing(smoothing, k=v, discount=v)
        curve.append(lm.cross_entropy(tune_data))
    return float(grid[int(np.argmin(curve))]), curve


def seeds_for(corpus: str, seeds: tuple[int, ...]) -> tuple[int, ...]:
    """Shakespeare's split is deterministic (one run); names get one split per seed."""
    return seeds if corpus == "names" else (seeds[0],)
