"""Vectorised n-gram counting: every n-gram becomes one integer, counting is ``np.unique``.

An n-gram ``(x_1, ..., x_n)`` over a vocabulary of size ``V`` is encoded as the base-``V``
number ``code = x_1 V^{n-1} + x_2 V^{n-2} + ... + x_n``. Then its context (the first
``n - 1`` tokens) is ``code // V``, its target is ``code % V`` and its ``j``-token suffix is
``code % V^j``. Counting all n-grams of a corpus is one sort (``np.unique``); looking a batch
of n-grams up is one ``np.searchsorted``. No Python loop ever runs per token.

Chapter: stages/stage-01-ngrams ("Counting at the speed of NumPy").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT64_MAX = np.iinfo(np.int64).max


def check_code_range(vocab_size: int, order: int) -> None:
    """Refuse an (order, vocabulary) pair whose codes would overflow int64."""
    if vocab_size**order > INT64_MAX:
        raise ValueError(
            f"order {order} over a vocabulary of {vocab_size} tokens needs codes up to "
            f"{vocab_size}**{order}, which overflows int64; lower the order or the vocabulary"
        )


def window_codes(ids: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """Codes of every length-``order`` window of a stream: (L,) ids -> (L - order + 1,) codes.

    >>> window_codes(np.array([0, 1, 2, 1]), 2, 3).tolist()   # 01, 12, 21 in base 3
    [1, 5, 7]
    """
    n_windows = len(ids) - order + 1
    code = np.zeros(max(n_windows, 0), dtype=np.int64)
    if n_windows <= 0:
        return code
    for j in range(order):  # a loop over the n-gram's positions, never over tokens
        code = code * vocab_size + ids[j : j + n_windows]
    return code


@dataclass(frozen=True)
class CountTable:
    """Counts of the n-grams of one order, sorted by code, with per-context summaries.

    ``codes`` (U,) sorted distinct n-gram codes; ``counts`` (U,) their counts;
    ``ctx_codes`` (C,) sorted distinct contexts (``codes // V``); ``ctx_totals`` (C,)
    the summed count of each context, ``c(h) = sum_w c(h w)``; ``ctx_types`` (C,) the number
    of distinct tokens seen after each context, ``N_{1+}(h .)``.
    """

    order: int
    vocab_size: int
    codes: np.ndarray
    counts: np.ndarray
    ctx_codes: np.ndarray
    ctx_totals: np.ndarray
    ctx_types: np.ndarray

    @classmethod
    def from_codes(cls, codes: np.ndarray, order: int, vocab_size: int) -> CountTable:
        """Count raw (unsorted, repeated) codes."""
        uniq, counts = np.unique(codes, return_counts=True)
        return cls.from_unique(uniq, counts.astype(np.int64), order, vocab_size)

    @classmethod
    def from_unique(
        cls, codes: np.ndarray, counts: np.ndarray, order: int, vocab_size: int
    ) -> CountTable:
        """Build from sorted distinct codes and their (positive) counts."""
        ctx = codes // vocab_size  # sorted because codes are
        ctx_codes, first = np.unique(ctx, return_index=True)
        if len(codes):
            totals = np.add.reduceat(counts, first)
        else:
            totals = np.zeros(0, dtype=np.int64)
        types = np.diff(np.append(first, len(codes)))
        return cls(order, vocab_size, codes, counts, ctx_codes, totals, types)

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Counts of a batch of n-gram codes (0 for unseen): (N,) -> (N,)."""
        return _gather(self.codes, self.counts, codes)

    def context(self, ctx_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(c(h), N_{1+}(h .))`` for a batch of context codes (0 for unseen): (N,) -> 2x (N,)."""
        return (
            _gather(self.ctx_codes, self.ctx_totals, ctx_codes),
            _gather(self.ctx_codes, self.ctx_types, ctx_codes),
        )

    def continuation(self) -> CountTable:
        """The table of the (order - 1)-gram suffixes counted by distinct left extensions.

        ``N_{1+}(. w_2..w_n)``: how many different tokens precede the suffix — Kneser–Ney's
        continuation count.
        """
        if self.order < 2:
            raise ValueError("a unigram table has no shorter suffix to continue")
        suffix = self.codes % (self.vocab_size ** (self.order - 1))
        uniq, counts = np.unique(suffix, return_counts=True)
        counts = counts.astype(np.int64)
        return CountTable.from_unique(uniq, counts, self.order - 1, self.vocab_size)

    @property
    def n_types(self) -> int:
        """Number of distinct n-grams seen."""
        return int(len(self.codes))

    @property
    def n_contexts(self) -> int:
        """Number of distinct contexts seen."""
        return int(len(self.ctx_codes))


def _gather(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where keys[i] == query, else 0 (keys sorted): a vectorised dictionary."""
    if len(keys) == 0:
        return np.zeros(queries.shape, dtype=values.dtype)
    pos = np.searchsorted(keys, queries)
    pos = np.minimum(pos, len(keys) - 1)
    hit = keys[pos] == queries
    return np.where(hit, values[pos], 0)
