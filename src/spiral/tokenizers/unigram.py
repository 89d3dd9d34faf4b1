"""Unigram language-model tokenizer: segmentation as maximum-likelihood inference.

Each piece ``x`` of a vocabulary ``V`` has a probability ``p(x)``; a segmentation
``x_1..x_k`` of a chunk ``s`` has probability ``prod_i p(x_i)``, and the marginal likelihood
of the corpus ``D`` sums over all segmentations:

    L(p) = sum_{s in D} log sum_{x in S(s)} prod_i p(x_i).

Training (Kudo, 2018, "Subword Regularization") alternates EM and pruning:

* E-step: forward-backward over each chunk's lattice gives the expected count of every
  piece; M-step: ``p(x) = E[count(x)] / sum_y E[count(y)]``.
* Prune: drop the pieces whose removal lowers ``L`` the least (estimated from the
  best alternative segmentation of the piece), keeping single characters so that every
  training string stays segmentable, until the vocabulary reaches its target size.

Encoding is Viterbi: the single most probable segmentation. Characters never seen in
training fall back to their UTF-8 bytes (ids ``0..255``), so every string round-trips.
Pre-tokenization uses the same regex as :class:`~spiral.tokenizers.bpe.BPETokenizer`, so
the chapter's comparison isolates the segmentation algorithm.

Chapter: stage 10, "Tokenization" (section *The Unigram language model*).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import regex

from spiral.tokenizers.pretokenize import GPT2_PATTERN, check_encodable, pretoken_counts

NEG_INF = float("-inf")


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def viterbi(
    s: str, logp: Mapping[str, float], max_len: int, exclude: str | None = None
) -> tuple[float, list[str]]:
    """Most probable segmentation of ``s`` into pieces of ``logp``: ``(log prob, pieces)``.

    Returns ``(-inf, [])`` when ``s`` cannot be segmented.

    >>> viterbi("abc", {"a": -1.0, "b": -1.0, "c": -1.0, "ab": -1.5}, 2)
    (-2.5, ['ab', 'c'])
    """
    n = len(s)
    best = [NEG_INF] * (n + 1)  # best[j]: log prob of the best segmentation of s[:j]
    back = [0] * (n + 1)
    best[0] = 0.0
    for j in range(1, n + 1):
        for i in range(max(0, j - max_len), j):
            if best[i] == NEG_INF:
                continue
            piece = s[i:j]
            lp = logp.get(piece)
            if lp is None or piece == exclude:
                continue
            score = best[i] + lp
            if score > best[j]:
                best[j], back[j] = score, i
    if best[n] == NEG_INF:
        return NEG_INF, []
    pieces, j = [], n
    while j > 0:
        pieces.append(s[back[j] : j])
        j = back[j]
    return best[n], pieces[::-1]


def expected_counts(
    chunks: Mapping[str, int], logp: Mapping[str, float], max_len: int
) -> tuple[dict[str, float], float]:
    """E-step: expected piece counts by forward-backward, and the corpus log-likelihood."""
    counts: dict[str, float] = defaultdict(float)
    total_ll = 0.0
    for s, f in chunks.items():
        n = len(s)
        edges: list[tuple[int, int, float]] = []
        for i in range(n):
            for j in range(i + 1, min(n, i + max_len) + 1):
                lp = logp.get(s[i:j])
                if lp is not None:
                    edges.append((i, j, lp))
        alpha = [NEG_INF] * (n + 1)  # log sum over segmentations of s[:j]
        alpha[0] = 0.0
        for i, j, lp in edges:  # edges are sorted by start, so alpha[i] is final
            alpha[j] = _logaddexp(alpha[j], alpha[i] + lp)
        beta = [NEG_INF] * (n + 1)  # log sum over segmentations of s[i:]
        beta[n] = 0.0
        for i, j, lp in sorted(edges, key=lambda e: -e[1]):  # by end, descending
            beta[i] = _logaddexp(beta[i], lp + beta[j])
        z = alpha[n]
        total_ll += f * z
        for i, j, lp in edges:
            post = alpha[i] + lp + beta[j] - z  # log P(edge (i, j) is used | s)
            if post > -30.0:
                counts[s[i:j]] += f * math.exp(post)
    return counts, total_ll


class UnigramTokenizer:
    """Unigram LM tokenizer with byte fallback; ids ``0..255`` bytes, then pieces.

    >>> tok = UnigramTokenizer().train("low lower lowest " * 30, vocab_size=270)
    >>> tok.decode(tok.encode("lowest slow")) == "lowest slow"
    True
    """

    def __init__(
        self,
        pieces: Mapping[str, float] | None = None,
        pattern: str = GPT2_PATTERN,
        max_piece_len: int = 16,
    ) -> None:
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        self.max_piece_len = max_piece_len
        self.log_likelihoods: list[float] = []  # per EM step, nats
        self._set_pieces(dict(pieces or {}))

    def _set_pieces(self, logp: dict[str, float]) -> None:
        self.pieces: list[str] = sorted(logp, key=lambda p: (-logp[p], p))
        self.logp: dict[str, float] = {p: logp[p] for p in self.pieces}
        self.piece_id: dict[str, int] = {p: 256 + k for k, p in enumerate(self.pieces)}
        # An unknown character costs its bytes at a penalty below every real piece.
        self._fallback_lp = min(self.logp.values(), default=0.0) - 10.0
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.pieces)

    def train(
        self,
        text: str,
        vocab_size: int,
        seed_factor: int = 8,
        shrink: float = 0.75,
        em_iters: int = 2,
    ) -> UnigramTokenizer:
        """EM + pruning down to at most ``vocab_size - 256`` pieces; returns self.

        Fewer remain when EM gives some pieces a vanishing expected count.
        """
        target = vocab_size - 256
        chunks = pretoken_counts(text, self.pattern)
        chars: Counter[str] = Counter()
        subs: Counter[str] = Counter()
        for s, f in chunks.items():
            for c in s:
                chars[c] += f
            for i in range(len(s)):
                for j in range(i + 2, min(len(s), i + self.max_piece_len) + 1):
                    subs[s[i:j]] += f
        if target < len(chars):
            raise ValueError(
                f"vocab_size={vocab_size} leaves {target} pieces, fewer than the "
                f"{len(chars)} distinct characters of the training text"
            )
        # Seed: every character plus the most frequent substrings, scored by count * length.
        frequent = [(p, c) for p, c in subs.items() if c >= 2]
        frequent.sort(key=lambda pc: (-pc[1] * len(pc[0]), pc[0]))
        seed = dict(chars)
        for piece, n in frequent[: seed_factor * target]:
            seed[piece] = n
        total = sum(seed.values())
        logp = {p: math.log(n / total) for p, n in seed.items()}
        self.log_likelihoods = []
        while True:
            for _ in range(em_iters):
                counts, ll = expected_counts(chunks, logp, self.max_piece_len)
                self.log_likelihoods.append(ll)
                for c in chars:  # characters must stay so every chunk is segmentable
                    counts[c] = max(counts.get(c, 0.0), 1e-3)
                z = sum(counts.values())
                logp = {p: math.log(c / z) for p, c in counts.items() if c > 0}
            if len(logp) <= target:
                break
            logp = self._prune(chunks, logp, chars, max(target, int(len(logp) * shrink)))
        self._set_pieces(logp)
        return self

    def _prune(
        self,
        chunks: Mapping[str, int],
        logp: dict[str, float],
        chars: Mapping[str, int],
        keep: int,
    ) -> dict[str, float]:
        # Loss of removing x ~ freq(x) * (log p(x) - log p(best other segmentation of x)),
        # with freq(x) its count in the Viterbi segmentations of the corpus.
        freq: Counter[str] = Counter()
        for s, f in chunks.items():
            for p in viterbi(s, logp, self.max_piece_len)[1]:
                freq[p] += f
        loss: dict[str, float] = {}
        for p, lp in logp.items():
            if p in chars:
                continue
            alt, _ = viterbi(p, logp, self.max_piece_len, exclude=p)
            loss[p] = freq[p] * (lp - alt)
        ranked = sorted(loss, key=lambda p: (-loss[p], p))
        kept = set(ranked[: max(0, keep - len(chars))]) | set(chars)
        return {p: lp for p, lp in logp.items() if p in kept}

    def _encode_chunk(self, s: str) -> list[int]:
        logp: Mapping[str, float] = self.logp
        unknown = {c for c in s if c not in logp}
        if unknown:  # byte fallback for characters outside the vocabulary
            logp = dict(logp)
            for c in unknown:
                logp[c] = self._fallback_lp * len(c.encode("utf-8"))
        _, pieces = viterbi(s, logp, self.max_piece_len)
        ids: list[int] = []
        for p in pieces:
            if p in self.piece_id:
                ids.append(self.piece_id[p])
            else:
                ids.extend(p.encode("utf-8"))
        return ids

    def encode(self, text: str) -> list[int]:
        """Text -> ids by Viterbi per pre-token chunk (cached)."""
        check_encodable(text)
        out: list[int] = []
        for chunk in self._regex.findall(text):
            ids = self._cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                self._cache[chunk] = ids
            out.extend(ids)
        return out

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids -> text (byte-fallback ids are joined back into UTF-8)."""
        parts: list[bytes] = []
        n = self.vocab_size
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {n})")
            parts.append(bytes([i]) if i < 256 else self.pieces[i - 256].encode("utf-8"))
        return b"".join(parts).decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return f"UnigramTokenizer(vocab_size={self.vocab_size})"
