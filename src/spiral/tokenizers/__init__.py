"""Tokenizers: characters (stage 1 onward), bytes and byte-level BPE (stage 10).

Every tokenizer shares one interface: ``encode(str) -> list[int]``, ``decode(ids) -> str``,
``vocab_size``.
"""

from spiral.tokenizers.char import CharTokenizer

__all__ = ["CharTokenizer"]

# stage 10: bytes, byte-level BPE and the Unigram LM tokenizer
from spiral.tokenizers.bpe import BPETokenizer  # noqa: E402
from spiral.tokenizers.byte import ByteTokenizer  # noqa: E402
from spiral.tokenizers.unigram import UnigramTokenizer  # noqa: E402

__all__ += ["BPETokenizer", "ByteTokenizer", "UnigramTokenizer"]
