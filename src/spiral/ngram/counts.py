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
DENSE_LIMIT = 1 << 21  # below this many possible codes, count with bincount, look up directly


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
    of distinct tokens seen after each context, ``N_{1+}(h .)``. When the code space is
    small (``V^order <= DENSE_LIMIT``) the same numbers are also kept as dense arrays indexed
    by code, and lookups are a plain gather instead of a binary search.
    """

    order: int
    vocab_size: int
    codes: np.ndarray
    counts: np.ndarray
    ctx_codes: np.ndarray
    ctx_totals: np.ndarray
    ctx_types: np.ndarray
    dense: np.ndarray | None = None  # (V^order,) counts by code
    ctx_dense: tuple[np.ndarray, np.ndarray] | None = None  # 2x (V^(order-1),)

    @classmethod
    def from_codes(cls, codes: np.ndarray, order: int, vocab_size: int) -> CountTable:
        """Count raw (unsorted, repeated) codes: bincount when the space is small, else sort."""
        size = vocab_size**order
        if size <= DENSE_LIMIT:
            dense = np.bincount(codes, minlength=size)
            uniq = np.flatnonzero(dense)
            return cls.from_unique(uniq, dense[uniq].astype(np.int64), order, vocab_size)
        if size < 1 << 32:  # sorting 4-byte keys is about twice as fast as 8-byte keys
            codes = codes.astype(np.uint32)
        uniq, counts = np.unique(codes, return_counts=True)
        uniq = uniq.astype(np.int64)
        return cls.from_unique(uniq, counts.astype(np.int64), order, vocab_size)

    @classmethod
    def from_weighted(
        cls, codes: np.ndarray, weights: np.ndarray, order: int, vocab_size: int
    ) -> CountTable:
        """Sum integer ``weights`` per code (codes may repeat, in any order)."""
        size = vocab_size**order
        if size <= DENSE_LIMIT:
            dense = np.bincount(codes, weights=weights, minlength=size)
            uniq = np.flatnonzero(dense)
            return cls.from_unique(uniq, np.rint(dense[uniq]).astype(np.int64), order, vocab_size)
        uniq, inverse = np.unique(codes, return_inverse=True)
        summed = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(uniq))
        return cls.from_unique(uniq, np.rint(summed).astype(np.int64), order, vocab_size)

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
        dense = ctx_dense = None
        if vocab_size**order <= DENSE_LIMIT:
            dense = np.zeros(vocab_size**order, dtype=np.int64)
            dense[codes] = counts
            n_ctx = vocab_size ** (order - 1)
            ctx_dense = (np.zeros(n_ctx, dtype=np.int64), np.zeros(n_ctx, dtype=np.int64))
            ctx_dense[0][ctx_codes] = totals
            ctx_dense[1][ctx_codes] = types
        return cls(order, vocab_size, codes, counts, ctx_codes, totals, types, dense, ctx_dense)

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Counts of a batch of n-gram codes (0 for unseen): (N,) -> (N,)."""
        if self.dense is not None:
            return self.dense[codes]
        return _gather(self.codes, self.counts, codes)

    def context(self, ctx_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(c(h), N_{1+}(h .))`` for a batch of context codes (0 for unseen): (N,) -> 2x (N,)."""
        if self.ctx_dense is not None:
            return self.ctx_dense[0][ctx_codes], self.ctx_dense[1][ctx_codes]
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
        return CountTable.from_codes(suffix, self.order - 1, self.vocab_size)

    def marginal(self, order: int) -> CountTable:
        """Counts of the last ``order`` tokens of these n-grams (summing over the rest)."""
        suffix = self.codes % (self.vocab_size**order)
        return CountTable.from_weighted(suffix, self.counts, order, self.vocab_size)

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
    if len(queries) > 50_000 and len(keys) > 50_000:
        # binary searches in sorted order touch memory in order: sort the distinct queries
        uniq, inverse = np.unique(queries, return_inverse=True)
        return _search(keys, values, uniq)[inverse.reshape(-1)]
    return _search(keys, values, queries)


def _search(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(keys, queries)
    pos = np.minimum(pos, len(keys) - 1)
    hit = keys[pos] == queries
    return np.where(hit, values[pos], 0)
