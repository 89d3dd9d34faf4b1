"""Pre-tokenization: cut text into chunks that a subword merge may never cross.

Byte-level BPE (Radford et al., 2019, "Language Models are Unsupervised Multitask
Learners") first splits text with a regular expression into words, numbers, punctuation
runs and whitespace runs; merges then happen only *inside* a chunk. Two consequences the
chapter uses:

* training needs only the multiset of distinct chunks, ``{chunk: count}``, so a 1 MB
  corpus becomes a few tens of thousands of short byte strings;
* encoding can cache the ids of each distinct chunk.

Special tokens (``<|endoftext|>``) are cut out *before* the regex runs, so they are never
split and never take part in a merge.

Chapter: stage 10, "Tokenization" (section *Pre-tokenization*).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import regex

#: The GPT-2 pre-tokenizer pattern (Radford et al., 2019): contractions, an optional space
#: followed by letters / digits / other symbols, and whitespace runs. ``\s+(?!\S)`` leaves
#: the last space of a run to attach to the next word, so " the" stays one chunk.
GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

#: The cl100k (GPT-4) pattern, exactly as tiktoken's ``cl100k_base`` defines it:
#: case-insensitive contractions, digits in groups of at most three, a leading non-letter
#: allowed before a word, a whitespace run at the end of the text kept whole (``\s++$``),
#: and a single whitespace character as the last resort (``\s``, not ``\s+``).
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


def check_encodable(text: str) -> bytes:
    """Return ``text`` as UTF-8, or raise a clear ``ValueError`` for a lone surrogate.

    >>> check_encodable("hé")
    b'h\\xc3\\xa9'
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise ValueError(
            f"text contains a lone surrogate U+{ord(bad):04X} at index {err.start}; "
            "it is not a Unicode scalar value and has no UTF-8 encoding, so no byte-level "
            "tokenizer can represent it (decode your input with errors='replace' first)"
        ) from None


def special_splitter(special_tokens: Iterable[str]) -> regex.Pattern[str] | None:
    """A regex that matches any special token, longest first (``None`` if there are none)."""
    specials = sorted(set(special_tokens), key=lambda s: (-len(s), s))
    if not specials:
        return None
    return regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")")


def split_special(
    text: str, splitter: regex.Pattern[str] | None
) -> Iterator[tuple[str, bool]]:
    """Yield ``(piece, is_special)`` in order; ordinary pieces are never empty.

    >>> list(split_special("a<s>b", special_splitter(["<s>"])))
    [('a', False), ('<s>', True), ('b', False)]
    """
    if splitter is None:
        if text:
            yield text, False
        return
    # With one capturing group, re.split alternates ordinary, special, ordinary, ...
    for i, piece in enumerate(splitter.split(text)):
        if i % 2 == 1:
            yield piece, True
        elif piece:
            yield piece, False


def pretoken_counts(
    text: str, pattern: str = GPT2_PATTERN, special_tokens: Sequence[str] = ()
) -> Counter[str]:
    """Count the distinct pre-token chunks of ``text`` (special tokens removed first).

    >>> sorted(pretoken_counts("the cat the").items())
    [(' cat', 1), (' the', 1), ('the', 1)]
    """
    check_encodable(text)
    compiled = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for piece, is_special in split_special(text, special_splitter(special_tokens)):
        if not is_special:
            counts.update(compiled.findall(piece))
    return counts


def chunk_counts(
    text: str, pattern: str = GPT2_PATTERN, special_tokens: Sequence[str] = ()
) -> Counter[bytes]:
    """:func:`pretoken_counts` with each chunk as UTF-8 bytes (what byte-level BPE sees).

    >>> sorted(chunk_counts("the cat the").items())
    [(b' cat', 1), (b' the', 1), (b'the', 1)]
    """
    counts = pretoken_counts(text, pattern, special_tokens)
    return Counter({chunk.encode("utf-8"): n for chunk, n in counts.items()})
