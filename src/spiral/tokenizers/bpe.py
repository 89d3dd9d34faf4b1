"""Byte-level byte-pair encoding (BPE): greedy compression of a text into subword tokens.

Start from the 256 byte values; repeatedly find the most frequent adjacent pair of tokens
inside the pre-token chunks and replace every occurrence by one new token. After ``M``
merges the vocabulary has ``256 + M`` tokens (plus special tokens) and each merge lowers
the token count by the number of occurrences it replaces -- the pair's count, except that
overlapping occurrences in a run such as ``aaa`` are replaced only once each pair of
symbols -- so BPE is *greedy compression*: near enough the largest single-merge drop, but
not exactly (stage 10, exercise 3).

Two trainers produce identical merge lists:

* :func:`train_merges_naive` recounts every pair in every distinct chunk after each
  merge: ``O(M * S)`` for ``S`` symbols in the distinct chunks;
* :func:`train_merges_fast` keeps pair counts incrementally, a pair -> chunks index, and a
  lazy-deletion heap; a merge costs time proportional to the chunks that contain the pair.

Tie-breaking (both trainers): highest count first, then the smallest pair ``(a, b)`` of
token ids in lexicographic order. Encoding applies merges by rank: in each chunk, merge the
adjacent pair with the lowest merge index until none is in the table.

Papers: Gage (1994), "A New Algorithm for Data Compression"; Sennrich, Haddow & Birch
(2016), "Neural Machine Translation of Rare Words with Subword Units"; Radford et al.
(2019) for byte-level BPE with a regex pre-tokenizer.

Chapter: stage 10, "Tokenization".
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Literal

import regex

from spiral.tokenizers.pretokenize import (
    GPT2_PATTERN,
    check_encodable,
    chunk_counts,
    special_splitter,
    split_special,
)

Pair = tuple[int, int]
FORMAT = "spiral-bpe"
VERSION = 1


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each non-overlapping occurrence of ``pair``, left to right, by ``new_id``.

    >>> merge_pair([97, 97, 97, 98], (97, 97), 256)
    [256, 97, 98]
    """
    a, b = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges_naive(chunks: Mapping[bytes, int], n_merges: int) -> list[tuple[Pair, int]]:
    """Reference trainer: recount all pairs after every merge. Returns ``[(pair, count)]``.

    >>> [p for p, _ in train_merges_naive({b"abab": 2, b"ab": 1}, 2)]
    [(97, 98), (256, 256)]
    """
    words = [list(w) for w in chunks]
    freqs = list(chunks.values())
    merges: list[tuple[Pair, int]] = []
    for k in range(n_merges):
        stats: dict[Pair, int] = defaultdict(int)
        for w, f in zip(words, freqs):
            for p in zip(w, w[1:]):
                stats[p] += f
        if not stats:
            break  # every chunk is a single token: nothing left to merge
        best = min(stats, key=lambda p: (-stats[p], p))
        new_id = 256 + k
        words = [merge_pair(w, best, new_id) if len(w) > 1 else w for w in words]
        merges.append((best, stats[best]))
    return merges


def train_merges_fast(chunks: Mapping[bytes, int], n_merges: int) -> list[tuple[Pair, int]]:
    """Incremental trainer: pair counts, pair -> chunk index and a lazy-deletion heap.

    Produces exactly the merges of :func:`train_merges_naive` (same tie-breaking).

    >>> [p for p, _ in train_merges_fast({b"abab": 2, b"ab": 1}, 2)]
    [(97, 98), (256, 256)]
    """
    words = [list(w) for w in chunks]
    freqs = list(chunks.values())
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> chunks that (may) contain it
    for i, (w, f) in enumerate(zip(words, freqs)):
        for p in zip(w, w[1:]):
            counts[p] += f
            where[p].add(i)
    # Min-heap of (-count, pair): the top is the highest count, then the smallest pair.
    # Entries go stale when a count changes; a popped entry is valid only if it still
    # matches the live count (lazy deletion).
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[Pair, int]] = []
    while len(merges) < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # stale entry
        new_id = 256 + len(merges)
        merges.append((pair, -neg))
        delta: dict[Pair, int] = defaultdict(int)
        for i in where.pop(pair):
            w = words[i]
            new_w = merge_pair(w, pair, new_id)
            if len(new_w) == len(w):
                continue  # index entry left over from an earlier merge
            f = freqs[i]
            for p in zip(w, w[1:]):
                delta[p] -= f
            for p in zip(new_w, new_w[1:]):
                delta[p] += f
                where[p].add(i)
            words[i] = new_w
        for p, d in delta.items():
            if d == 0:
                continue
            c = counts[p] + d
            if c > 0:
                counts[p] = c
                heapq.heappush(heap, (-c, p))
            else:
                del counts[p]
                where.pop(p, None)
        counts.pop(pair, None)
    return merges


TRAINERS = {"naive": train_merges_naive, "fast": train_merges_fast}


class BPETokenizer:
    """Byte-level BPE with a regex pre-tokenizer and special tokens.

    Ids ``0..255`` are bytes, ``256..256+M-1`` are merges in order, then special tokens.

    >>> tok = BPETokenizer().train("low lower lowest " * 20, vocab_size=260)
    >>> tok.decode(tok.encode("lowest low")) == "lowest low"
    True
    """

    def __init__(
        self,
        merges: Iterable[Pair] = (),
        pattern: str = GPT2_PATTERN,
        special_tokens: Sequence[str] = (),
    ) -> None:
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        if len(set(special_tokens)) != len(special_tokens) or any(not s for s in special_tokens):
            raise ValueError("special tokens must be distinct, non-empty strings")
        self._special_list = list(special_tokens)
        self.merge_counts: list[int] = []
        self._set_merges([tuple(m) for m in merges])  # type: ignore[misc]

    def _set_merges(self, merges: list[Pair]) -> None:
        vocab = [bytes([i]) for i in range(256)]
        for k, (a, b) in enumerate(merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(f"merge {k} = ({a}, {b}) refers to a token not yet defined")
            vocab.append(vocab[a] + vocab[b])
        self.merges: list[Pair] = merges
        self.ranks: dict[Pair, int] = {p: k for k, p in enumerate(merges)}
        if len(self.ranks) != len(merges):
            raise ValueError("the merge list repeats a pair")
        self.vocab: list[bytes] = vocab  # id -> bytes, without special tokens
        n = len(vocab)
        self.special_tokens: dict[str, int] = {s: n + j for j, s in enumerate(self._special_list)}
        self._id_to_special = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        self._special_re = special_splitter(self._special_list)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self._special_list)

    def train(
        self,
        text: str,
        vocab_size: int,
        trainer: Literal["fast", "naive"] = "fast",
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``; returns self."""
        n_merges = vocab_size - 256 - len(self._special_list)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is below 256 bytes + "
                f"{len(self._special_list)} special tokens"
            )
        chunks = chunk_counts(text, self.pattern, self._special_list)
        learned = TRAINERS[trainer](chunks, n_merges)
        self._set_merges([p for p, _ in learned])
        self.merge_counts = [c for _, c in learned]
        return self

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        # Apply the earliest-learned merge present, repeatedly: this replays training order.
        ids = list(chunk)
        ranks = self.ranks
        inf = len(ranks)
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, inf))
            rank = ranks.get(pair)
            if rank is None:
                break
            ids = merge_pair(ids, pair, 256 + rank)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ignoring special tokens (their text is encoded as ordinary bytes)."""
        return self.encode(text, allowed_special=frozenset(), disallowed_special=())

    def encode(self, text: str, *,
               allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Text -> ids, with tiktoken's rules for special tokens. A lone surrogate is a
        clear ``ValueError``.

        Special-token text becomes its control id only when listed in ``allowed_special``
        (``"all"`` for every one). By default every other special token is *disallowed*:
        text that contains one raises ``ValueError`` rather than letting user-typed
        ``<|endoftext|>`` act as a control token. Pass ``disallowed_special=()`` (or call
        :meth:`encode_ordinary`) to encode such text as ordinary bytes.

        >>> tok = BPETokenizer(special_tokens=["<|eot|>"])
        >>> tok.encode("hi<|eot|>", allowed_special="all")
        [104, 105, 256]
        >>> tok.encode("hi<|eot|>", disallowed_special=())
        [104, 105, 60, 124, 101, 111, 116, 124, 62]
        """
        known = set(self.special_tokens)
        for arg, given in (("allowed_special", allowed_special),
                           ("disallowed_special", disallowed_special)):
            if isinstance(given, bool) or (isinstance(given, str) and given != "all"):
                raise TypeError(f"{arg} takes 'all' or a set of special tokens, got {given!r}")
            if given != "all" and set(given) - known:
                raise ValueError(f"{arg} names unknown special tokens {sorted(set(given) - known)}"
                                 f"; this tokenizer has {sorted(known)}")
        allowed = known if allowed_special == "all" else set(allowed_special)
        disallowed = known - allowed if disallowed_special == "all" else set(disallowed_special)
        guard = self._special_re if disallowed == known else special_splitter(disallowed)
        if guard is not None and (hit := guard.search(text)):
            raise ValueError(f"text contains the special token {hit.group()!r}, which is not in "
                             "allowed_special; pass allowed_special={...} to encode it as a "
                             "control token, or disallowed_special=() for plain text")
        splitter = self._special_re if allowed == known else special_splitter(allowed)
        check_encodable(text)
        out: list[int] = []
        cache = self._cache
        if len(cache) > 1 << 18:
            cache.clear()
        for piece, is_special in split_special(text, splitter):
            if is_special:
                out.append(self.special_tokens[piece])
                continue
            for chunk in self._regex.findall(piece):
                ids = cache.get(chunk)
                if ids is None:
                    ids = self._encode_chunk(chunk.encode("utf-8"))
                    if len(chunk) <= 64:  # words repeat; a long run (base64, digits) rarely does
                        cache[chunk] = ids
                out.extend(ids)
        return out

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token ``i`` (special tokens give their UTF-8 text)."""
        if 0 <= i < len(self.vocab):
            return self.vocab[i]
        if i in self._id_to_special:
            return self._id_to_special[i]
        raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids -> text. Invalid UTF-8 (possible for arbitrary id sequences) is replaced."""
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors=errors)

    # --- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "pattern": self.pattern,
            "special_tokens": self._special_list,
            "merges": [list(p) for p in self.merges],
            # For human readers only; ignored by load().
            "merged_tokens": [
                t.decode("utf-8", errors="backslashreplace") for t in self.vocab[256:]
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write readable JSON atomically (temporary file + rename)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a file written by :meth:`save`; a malformed file is a clear ``ValueError``."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a spiral BPE file (invalid JSON: {err})") from None
        try:
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                raise ValueError(f"expected 'format': {FORMAT!r}")
            if d.get("version") != VERSION:
                raise ValueError(f"unsupported version {d.get('version')!r}")
            merges = d["merges"]
            if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m)
                for m in merges
            ):
                raise ValueError("'merges' must be a list of [int, int] pairs")
            specials = d["special_tokens"]
            if not isinstance(specials, list) or not all(isinstance(s, str) for s in specials):
                raise ValueError("'special_tokens' must be a list of strings")
            if not isinstance(d["pattern"], str):
                raise ValueError("'pattern' must be a string")
            return cls([(a, b) for a, b in merges], d["pattern"], specials)
        except (KeyError, ValueError, regex.error) as err:
            what = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"{path}: malformed spiral BPE file: {what}") from None

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"


def compression(tokenizer: object, text: str) -> float:
    """UTF-8 bytes per token of ``text`` (higher is better compression)."""
    n = len(tokenizer.encode(text))  # type: ignore[attr-defined]
    return len(text.encode("utf-8")) / max(n, 1)


__all__ = [
    "BPETokenizer",
    "compression",
    "merge_pair",
    "train_merges_fast",
    "train_merges_naive",
]
