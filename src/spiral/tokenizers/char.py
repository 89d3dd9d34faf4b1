"""Character-level tokenizer: one id per distinct character of a training text.

The vocabulary is the sorted set of characters seen in training, so ids are stable for a
given text. Used by the n-gram models (stage 1) and every character-level neural model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class CharTokenizer:
    """Map characters to integer ids and back.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.encode("hell")
    [1, 0, 2, 2]
    >>> tok.decode([3, 0])
    'oe'
    """

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("CharTokenizer needs at least one character; got an empty vocabulary")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer vocabulary has repeated characters")
        if any(len(c) != 1 for c in chars):
            raise ValueError("every vocabulary entry must be exactly one character")
        self.itos: list[str] = chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str | Iterable[str]) -> CharTokenizer:
        """Build the vocabulary as the sorted set of characters in ``text``."""
        if isinstance(text, str):
            chars = set(text)
        else:
            chars = set()
            for piece in text:
                chars.update(piece)
        if not chars:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Characters -> ids; an unknown character is a clear error."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} is not in the vocabulary of {self.vocab_size} "
                "characters; build the tokenizer from text that contains it"
            ) from None

    def encode_array(self, text: str) -> np.ndarray:
        """Vectorised encode to an int64 array (fast for whole corpora)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table_keys = np.array([ord(c) for c in self.itos], dtype=np.uint32)
        order = np.argsort(table_keys)
        sorted_keys = table_keys[order]
        pos = np.searchsorted(sorted_keys, codes)
        pos = np.clip(pos, 0, len(sorted_keys) - 1)
        bad = sorted_keys[pos] != codes
        if bad.any():
            first = chr(int(codes[np.argmax(bad)]))
            raise ValueError(
                f"character {first!r} is not in the vocabulary of {self.vocab_size} characters"
            )
        return order[pos].astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> characters."""
        n = self.vocab_size
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {n})")
            out.append(self.itos[i])
        return "".join(out)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
