"""``NGramLM``: an order-n Markov language model fitted by counting.

The chain rule writes ``P(x_1..x_T) = prod_t P(x_t | x_<t)``; the Markov assumption keeps
only the last ``n - 1`` tokens, ``P(x_t | x_{t-n+1} .. x_{t-1})``. Maximum likelihood is
counting, ``P(w | h) = c(h w) / c(h)``; add-k smoothing is ``(c(h w) + k) / (c(h) + k|V|)``
(the posterior mean under a symmetric Dirichlet(k) prior; k = 1 is Laplace); interpolated
Kneser–Ney (Kneser & Ney 1995; Chen & Goodman 1998) with one absolute discount D per model:

    P(w | h) = max(c(h w) - D, 0) / c(h) + D N_{1+}(h .) / c(h) * P_lower(w | h'),

where the lower orders use continuation counts ``N_{1+}(. h' w)`` and the recursion ends in
the uniform distribution over V. Chapter: stages/stage-01-ngrams.

Conventions. V is the set of distinct training tokens (plus the boundary marker when the
data are separate sequences, plus ``<unk>`` only when ``unk=True``). Data are either one
continuous sequence (a ``str`` or 1-D integer ids; its first ``order - 1`` tokens are context
only) or an iterable of sequences such as names (each padded with ``order - 1`` begin
markers and one end marker, which is scored). The boundary marker is ``"\\n"`` for
characters and ``-1`` for integer ids, so a names model reads and writes one name per line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from spiral.ngram.counts import CountTable, check_code_range, window_codes
from spiral.ngram.sequences import BOUNDARY, Data, pad, parse

SMOOTHINGS = ("none", "add_k", "laplace", "kneser_ney")


class NGramLM:
    """Order-``order`` n-gram language model over characters or integer ids.

    >>> lm = NGramLM(2, smoothing="laplace").fit("abab")
    >>> round(lm.prob("a", "b"), 4)     # (c(ab) + 1) / (c(a) + |V|) = (2 + 1) / (2 + 2)
    0.75
    """

    def __init__(
        self,
        order: int,
        smoothing: str = "none",
        k: float = 1.0,
        discount: float = 0.75,
        unk: bool = False,
        context_length: int = 256,
    ) -> None:
        if not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        if smoothing == "add_k" and not (k > 0 and math.isfinite(k)):
            raise ValueError(f"add-k smoothing needs a finite k > 0, got k={k}")
        if smoothing == "kneser_ney" and not 0 < discount <= 1:
            raise ValueError(f"Kneser-Ney needs a discount in (0, 1], got {discount}")
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        self.order = int(order)
        self.smoothing = smoothing
        self.k = 1.0 if smoothing == "laplace" else (float(k) if smoothing == "add_k" else 0.0)
        self.discount = float(discount)
        self.unk = bool(unk)
        self.context_length = int(context_length)  # the evaluator's window length
        self.kind: str | None = None
        self.sequences = False
        self.symbols = np.zeros(0, dtype=np.int64)  # (|V|,) sorted raw symbols, set by fit
        self.unk_id = -1
        self._lut: np.ndarray | None = None  # raw symbol - symbols[0] -> id

    # ------------------------------------------------------------------ vocabulary
    def _encode_raw(self, raw: np.ndarray) -> np.ndarray:
        """Raw symbols (N,) -> ids (N,); unknown symbols are an error or ``<unk>``."""
        lo, span = int(self.symbols[0]), int(self.symbols[-1]) - int(self.symbols[0]) + 1
        if span <= 1 << 21:  # a dense lookup table: one gather per token
            if self._lut is None:
                self._lut = np.full(span, -1, dtype=np.int64)
                self._lut[self.symbols - lo] = np.arange(len(self.symbols))
            inside = (raw >= lo) & (raw < lo + span)
            pos = np.where(inside, self._lut[np.clip(raw - lo, 0, span - 1)], -1)
            bad = pos < 0
        else:
            pos = np.minimum(np.searchsorted(self.symbols, raw), len(self.symbols) - 1)
            bad = self.symbols[pos] != raw
        if bad.any():
            if not self.unk:
                first = raw[np.argmax(bad)]
                shown = chr(int(first)) if self.kind == "char" else int(first)
                raise ValueError(
                    f"token {shown!r} is not in the model's vocabulary of {self.vocab_size} "
                    "tokens (the distinct training tokens); fit on data that contains it or "
                    "pass unk=True to map unseen tokens to <unk>"
                )
            pos = np.where(bad, self.unk_id, pos)
        return pos.astype(np.int64)

    def _stream(self, data: Data) -> tuple[np.ndarray, np.ndarray]:
        """data -> (ids (L,), scored (L,) bool): the padded id stream and which ids are scored."""
        kind, raw, lengths = parse(data)
        if kind != self.kind:
            raise TypeError(f"this model was fit on {self.kind} data, got {kind} data")
        if lengths is not None and not self.sequences:
            raise ValueError(
                "this model was fit on one continuous sequence, so it has no boundary marker; "
                "score separate sequences with a model fit on separate sequences"
            )
        stream, scored = pad(kind, raw, lengths, self.order)
        return self._encode_raw(stream), scored

    @property
    def vocab_size(self) -> int:
        """|V|: distinct training tokens (+ boundary for sequences, + <unk> if asked)."""
        return len(self.symbols) + int(self.unk)

    @property
    def vocab(self) -> list[Any]:
        """The vocabulary in id order (characters or ints; ``<unk>`` last if present)."""
        items: list[Any] = [chr(int(s)) if self.kind == "char" else int(s) for s in self.symbols]
        return items + (["<unk>"] if self.unk else [])

    def encode(self, tokens: str | Sequence[int] | np.ndarray) -> np.ndarray:
        """Tokens (one sequence, no padding) -> the model's ids (N,)."""
        kind, raw, lengths = parse(tokens) if len(tokens) else (self.kind, np.zeros(0, int), None)
        if lengths is not None or kind != self.kind:
            raise TypeError(f"expected one {self.kind} sequence")
        return self._encode_raw(raw) if len(raw) else np.zeros(0, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str | np.ndarray:
        """Ids -> a str (character models; <unk> as U+FFFD) or raw ids (<unk> as -2)."""
        ids = np.asarray(list(ids), dtype=np.int64)
        n_sym = len(self.symbols)
        raw = np.where(ids < n_sym, self.symbols[np.minimum(ids, n_sym - 1)], -2)
        if self.kind == "char":
            return "".join(chr(int(r)) if r >= 0 else "\ufffd" for r in raw)
        return raw

    # ------------------------------------------------------------------ fitting
    def fit(self, data: Data) -> NGramLM:
        """Count every n-gram of ``data`` (vectorised); returns self.

        Lower orders (for Kneser–Ney and for short contexts) are derived from these counts
        on first use, by summing over the leading tokens.
        """
        kind, raw, lengths = parse(data)
        stream, scored = pad(kind, raw, lengths, self.order)
        self.kind, self.sequences = kind, lengths is not None
        if kind == "char":  # codepoints are small: bincount beats a sort
            self.symbols = np.flatnonzero(np.bincount(stream)).astype(np.int64)
        else:
            self.symbols = np.unique(stream)  # (|V|,) sorted raw symbols
        self._lut = None
        self.unk_id = len(self.symbols) if self.unk else -1
        V, n = self.vocab_size, self.order
        check_code_range(V, n)
        ids = self._encode_raw(stream)  # (L,)
        codes = window_codes(ids, n, V)  # window j ends at position j + n - 1
        if self.sequences:
            codes = codes[scored[n - 1 :]]  # only windows whose target is scored
        self._tables: dict[int, CountTable] = {n: CountTable.from_codes(codes, n, V)}
        self._cont: dict[int, CountTable] = {}
        # a continuous stream's first n - 1 tokens end m-grams that no n-gram contains
        self._head = np.zeros(0, np.int64) if self.sequences else ids[: n - 1]
        return self

    def table(self, m: int) -> CountTable:
        """Counts of the m-grams (1 <= m <= order) of the training data."""
        self._check_fitted()
        if not 1 <= m <= self.order:
            raise ValueError(f"m must be in 1..{self.order}, got {m}")
        if m not in self._tables:
            top = self._tables[self.order]
            V = self.vocab_size
            edge = window_codes(self._head, m, V)  # (n - m,) or empty
            codes = np.concatenate([top.codes % V**m, edge])
            weights = np.concatenate([top.counts, np.ones(len(edge), np.int64)])
            self._tables[m] = CountTable.from_weighted(codes, weights, m, V)
        return self._tables[m]

    def continuation_table(self, m: int) -> CountTable:
        """Kneser–Ney's continuation counts N_{1+}(. w) of the m-grams (1 <= m < order)."""
        if m not in self._cont:
            self._cont[m] = self.table(m + 1).continuation()
        return self._cont[m]

    def num_parameters(self) -> int:
        """Stored statistics: the distinct m-gram counts of every order 1..order the model
        reads (the counts are its parameters; everything else is derived from them)."""
        return int(sum(self.table(m).n_types for m in range(1, self.order + 1)))

    @property
    def raw(self) -> list[CountTable]:
        """Count tables of every order 1..order."""
        return [self.table(m) for m in range(1, self.order + 1)]

    @property
    def cont(self) -> list[CountTable]:
        """Continuation-count tables of every order 1..order-1."""
        return [self.continuation_table(m) for m in range(1, self.order)]

    def with_smoothing(
        self, smoothing: str, k: float = 1.0, discount: float = 0.75
    ) -> NGramLM:
        """A copy that shares this model's counts but smooths differently (no refit)."""
        self._check_fitted()
        other = NGramLM(self.order, smoothing, k, discount, self.unk, self.context_length)
        for name in ("kind", "sequences", "symbols", "unk_id", "_tables", "_cont", "_head",
                     "_lut"):
            setattr(other, name, getattr(self, name))
        return other

    def _check_fitted(self) -> None:
        if self.kind is None:
            raise RuntimeError("call fit(data) before using the model")

    # ------------------------------------------------------------------ probabilities
    def _probs(self, ctx: np.ndarray, width: int, tgt: np.ndarray) -> np.ndarray:
        """P(tgt | ctx) for context codes of ``width`` tokens (an order-(width+1) estimate).

        ctx (N,) base-V codes of the last ``width`` tokens, tgt (N,) ids -> (N,) probabilities.
        """
        V, m = self.vocab_size, width + 1
        if self.smoothing != "kneser_ney":
            table = self.table(m)
            c = table.lookup(ctx * V + tgt).astype(np.float64)
            total = table.context(ctx)[0].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                p = (c + self.k) / (total + self.k * V)
            return np.nan_to_num(p, nan=0.0)  # MLE: an unseen context gives no probability
        D = self.discount
        p = np.full(len(tgt), 1.0 / V)
        for j in range(1, m + 1):  # j-gram level: the last j - 1 context tokens
            table = self.table(j) if j == m else self.continuation_table(j)
            h = ctx % (V ** (j - 1))
            c = table.lookup(h * V + tgt).astype(np.float64)
            total, types = (a.astype(np.float64) for a in table.context(h))
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            p = np.where(seen, (np.maximum(c - D, 0.0) + D * types * p) / safe, p)
        return p

    def _ctx_codes(self, ids: np.ndarray) -> np.ndarray:
        """Context ids (N, w) -> base-V codes (N,)."""
        code = np.zeros(ids.shape[0], dtype=np.int64)
        for j in range(ids.shape[1]):
            code = code * self.vocab_size + ids[:, j]
        return code

    def prob(self, context: str | Sequence[int], token: str | int) -> float:
        """P(token | last order-1 tokens of context); a shorter context uses a lower order.

        Contexts are taken literally: for a model of separate sequences, write the begin
        markers yourself (``lm.prob("\\n\\n", "e")`` is P(first letter = e) at order 3).
        """
        self._check_fitted()
        keep = self.order - 1  # only the window is encoded: symbols before it do not matter
        ctx = self.encode(context[-keep:]) if keep and len(context) else np.zeros(0, int)
        tgt = self.encode([int(token)] if self.kind == "int" else str(token))
        if len(tgt) != 1:
            raise ValueError(f"token must be a single token, got {token!r}")
        return float(self._probs(self._ctx_codes(ctx[None, :]), len(ctx), tgt)[0])

    def distribution(self, context: str | Sequence[int] | np.ndarray) -> np.ndarray:
        """The next-token distribution after ``context``: (V,) probabilities.

        An ``np.ndarray`` is read as the model's ids, a ``str`` or list as tokens.
        """
        self._check_fitted()
        if isinstance(context, np.ndarray):
            ids = context.astype(np.int64)
        else:
            keep = self.order - 1  # encode only the window (unknown symbols before it are fine)
            ids = (self.encode(context[-keep:]) if keep and len(context)
                   else np.zeros(0, dtype=np.int64))
        ids = ids[len(ids) - min(len(ids), self.order - 1) :]
        V = self.vocab_size
        code = self._ctx_codes(ids[None, :])
        return self._probs(np.repeat(code, V), len(ids), np.arange(V))

    # ------------------------------------------------------------------ evaluation
    def token_nll(self, data: Data) -> np.ndarray:
        """NLL in nats of every scored token of ``data``: (N_scored,) (inf where P = 0)."""
        self._check_fitted()
        ids, scored = self._stream(data)
        w = self.order - 1
        if len(ids) <= w or not scored.any():
            raise ValueError(f"data too short: order {self.order} needs more than {w} tokens")
        ctx = window_codes(ids[:-1], w, self.vocab_size) if w else np.zeros(len(ids), np.int64)
        p = self._probs(ctx[: len(ids) - w], w, ids[w:])[scored[w:]]
        with np.errstate(divide="ignore"):
            return -np.log(p)

    def event_counts(self, data: Data) -> tuple[np.ndarray, np.ndarray]:
        """Training counts of each scored token's n-gram and of its context: 2x (N_scored,).

        A zero in the first array is an n-gram never seen in training (MLE gives it P = 0).
        """
        self._check_fitted()
        ids, scored = self._stream(data)
        w, V = self.order - 1, self.vocab_size
        ctx = window_codes(ids[:-1], w, V)[: len(ids) - w] if w else np.zeros(len(ids), np.int64)
        ctx = ctx[scored[w:]]
        table = self.table(self.order)
        return table.lookup(ctx * V + ids[w:][scored[w:]]), table.context(ctx)[0]

    def cross_entropy(self, data: Data) -> float:
        """Mean NLL per scored token in nats (``inf`` if any token has probability 0)."""
        return float(np.mean(self.token_nll(data)))

    def perplexity(self, data: Data) -> float:
        """exp(cross-entropy): the effective branching factor (``inf`` for an unseen event)."""
        h = self.cross_entropy(data)
        return math.exp(h) if h < 700 else math.inf

    def window_nll(self, windows: np.ndarray) -> np.ndarray:
        """Evaluator protocol: (B, L) ids -> (B, L - 1) NLL of windows[:, 1:] in nats.

        Ids are the model's own (``encode``; for a character model the same as
        ``CharTokenizer.from_text(train)``). A target with fewer than order - 1 in-window
        tokens before it is scored by the model's lower-order estimate of that width.
        """
        self._check_fitted()
        windows = np.asarray(windows, dtype=np.int64)
        if windows.ndim != 2 or windows.shape[1] < 2:
            raise ValueError(f"windows must be (B, L) with L >= 2, got {windows.shape}")
        if windows.min() < 0 or windows.max() >= self.vocab_size:
            raise ValueError(f"ids must lie in [0, {self.vocab_size}) (the model's vocabulary)")
        B, L = windows.shape
        w = self.order - 1
        V = self.vocab_size
        p = np.empty((B, L - 1))
        for i in range(1, min(w, L)):  # fewer than w tokens before target i: lower order
            p[:, i - 1] = self._probs(self._ctx_codes(windows[:, :i]), i, windows[:, i])
        s = max(w, 1)  # first target with a full context
        if L > s:
            code = np.zeros((B, L - s), dtype=np.int64)
            for j in range(w):  # (B, L - s) codes of the w tokens before each target
                code = code * V + windows[:, s - w + j : L - w + j]
            flat = self._probs(code.reshape(-1), w, windows[:, s:].reshape(-1))
            p[:, s - 1 :] = flat.reshape(B, L - s)
        with np.errstate(divide="ignore"):
            return -np.log(p)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        n: int,
        rng: np.random.Generator | None = None,
        temperature: float = 1.0,
        prompt: str | Sequence[int] | None = None,
    ) -> str | np.ndarray:
        """Sample ``n`` tokens after ``prompt`` (not included), P^(1/temperature) renormalised.

        Separate-sequence models start from the begin markers and start afresh after each
        end marker (written as the boundary, ``"\\n"`` or ``-1``). When a context was never
        seen, an unsmoothed model backs off to the longest seen suffix.
        """
        self._check_fitted()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = rng if rng is not None else np.random.default_rng()
        w = self.order - 1
        start = [self._boundary_id()] * w if self.sequences else []
        ctx = start + (list(self.encode(prompt)) if prompt is not None and len(prompt) else [])
        out = np.empty(n, dtype=np.int64)
        cdfs: dict[tuple[int, ...], np.ndarray] = {}  # context -> cumulative distribution
        boundary = self._boundary_id()
        for t in range(n):  # sampling is inherently sequential
            key = tuple(ctx[len(ctx) - min(len(ctx), w) :])
            cdf = cdfs.get(key)
            if cdf is None:
                dist = self._next_distribution(np.asarray(key, dtype=np.int64))
                if temperature != 1.0:
                    with np.errstate(divide="ignore"):
                        logits = np.log(dist) / temperature
                    dist = np.exp(logits - logits.max())
                cdf = cdfs[key] = np.cumsum(dist)
            # inverse CDF: the first token whose cumulative mass exceeds u
            tok = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))
            out[t] = tok
            if self.sequences and tok == boundary:
                ctx = list(start)
            else:
                ctx.append(tok)
        return self.decode(out)

    def _boundary_id(self) -> int:
        hit = np.flatnonzero(self.symbols == BOUNDARY[str(self.kind)])
        return int(hit[0]) if len(hit) else -1

    def _next_distribution(self, ids: np.ndarray) -> np.ndarray:
        """(w,) context ids -> (V,) distribution; MLE backs off past unseen contexts."""
        V = self.vocab_size
        while True:
            code = self._ctx_codes(ids[None, :])
            dist = self._probs(np.repeat(code, V), len(ids), np.arange(V))
            if dist.sum() > 0 or len(ids) == 0:
                return dist
            ids = ids[1:]

    def __repr__(self) -> str:
        return (
            f"NGramLM(order={self.order}, smoothing={self.smoothing!r}, k={self.k}, "
            f"discount={self.discount})"
        )
