"""Tokenizers: characters (stage 1 onward), bytes and byte-level BPE (stage 10).

Every tokenizer shares one interface: ``encode(str) -> list[int]``, ``decode(ids) -> str``,
``vocab_size``.
"""

from spiral.tokenizers.char import CharTokenizer

__all__ = ["CharTokenizer"]
