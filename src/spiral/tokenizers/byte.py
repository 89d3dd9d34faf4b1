"""Byte tokenizer: one id per UTF-8 byte, a fixed vocabulary of 256.

The simplest lossless tokenizer for every string: ``encode(s) = list(s.encode("utf-8"))``.
It is byte-level BPE with zero merges, and the alphabet that BPE starts from. Each
character costs 1-4 tokens (UTF-8, RFC 3629), so sequences are the longest of any
tokenizer in the chapter.

Chapter: stage 10, "Tokenization" (section *Characters, bytes and subwords*).
"""

from __future__ import annotations

from collections.abc import Iterable

from spiral.tokenizers.pretokenize import check_encodable


class ByteTokenizer:
    """UTF-8 bytes as token ids.

    >>> tok = ByteTokenizer()
    >>> tok.encode("hé")
    [104, 195, 169]
    >>> tok.decode([104, 195, 169])
    'hé'
    """

    vocab_size: int = 256

    def encode(self, text: str) -> list[int]:
        """Text -> UTF-8 byte values; a lone surrogate is a clear ``ValueError``."""
        return list(check_encodable(text))

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Byte values -> text; invalid UTF-8 is replaced (``errors="strict"`` to raise)."""
        data = list(ids)
        if any(not 0 <= int(i) < 256 for i in data):
            raise ValueError("byte token ids must lie in [0, 256)")
        return bytes(data).decode("utf-8", errors=errors)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"
