"""A Hugging Face ``tokenizer.json`` (byte-level BPE) as our :class:`BPETokenizer` plus an id map.

GPT-2 and Llama 3 tokenize the same way our stage-10 tokenizer does: split the text at
special tokens, split each piece with a regex (the pre-tokenizer), encode each chunk's UTF-8
bytes, then apply merges in rank order. Only the bookkeeping differs:

* the file spells bytes as printable characters (GPT-2's ``bytes_to_unicode``: the 188
  printable bytes stand for themselves, the other 68 become chr(256 + n) in byte order);
* its ids are a free permutation: byte b is ``vocab[char(b)]``, merge k's result is
  ``vocab[a + b]``, not our 256 + k.

So :func:`load_hf_tokenizer` rebuilds the merges in OUR id space (byte b -> b, merge k ->
256 + k), builds a real :class:`BPETokenizer` with the file's regex and special tokens, and
:class:`HFTokenizer` maps ids through ``to_hf`` / ``from_hf``. ``ignore_merges`` (Llama 3):
a chunk that is itself in the vocabulary is one token, as tiktoken does. Anything else in
the file (a normalizer, another model type, byte fallback, a different pre-tokenizer) is a
clear :class:`HubError` naming it. Papers: Sennrich et al. (2016); Radford et al. (2019).
Chapter: stage 8 (real weights); stage 10 for the algorithm.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Literal

import regex

from spiral.hub.errors import HubError
from spiral.tokenizers.bpe import BPETokenizer, merge_pair
from spiral.tokenizers.pretokenize import GPT2_PATTERN, special_splitter, split_special

__all__ = ["HFTokenizer", "load_hf_tokenizer", "bytes_to_unicode"]

# GPT-2's regex run inside the pieces between single digits, as one regex: a digit is its
# own chunk, and a whitespace run that ends at a digit ends its piece, so it is taken whole
DIGITS_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"""
                  r"""|\s+(?![^\s\p{N}])|\s+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (Radford et al., 2019, encoder.py)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


class HFTokenizer:
    """A tokenizer.json's ids on top of our BPE: ``encode`` / ``decode`` speak the file's ids.

    Special tokens follow :meth:`BPETokenizer.encode` (tiktoken's rule): text that contains
    one raises unless it is in ``allowed_special`` (``"all"`` = Hugging Face's behaviour).
    """

    def __init__(self, bpe: BPETokenizer, to_hf: list[int], vocab_size: int,
                 ignore_merges: bool = False, hf_vocab: dict[bytes, int] | None = None) -> None:
        self.bpe, self.to_hf, self.ignore_merges = bpe, to_hf, ignore_merges
        self.vocab_size = vocab_size
        self.from_hf = {h: i for i, h in reversed(list(enumerate(to_hf)))}
        self._whole = hf_vocab or {}
        self._split = regex.compile(bpe.pattern)
        self.special_tokens = {s: to_hf[i] for s, i in bpe.special_tokens.items()}

    def _chunk(self, chunk: str) -> list[int]:
        data = chunk.encode("utf-8")
        if data in self._whole:  # ignore_merges: a whole chunk in the vocabulary is one token
            return [self._whole[data]]
        ids, ranks = list(data), self.bpe.ranks
        while len(ids) >= 2:
            rank = min(ranks.get(p, len(ranks)) for p in zip(ids, ids[1:]))
            if rank == len(ranks):
                break
            ids = merge_pair(ids, self.bpe.merges[rank], 256 + rank)
        return [self.to_hf[i] for i in ids]

    def encode(self, text: str, *,
               allowed_special: Literal["all"] | AbstractSet[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Text -> the file's ids (no BOS: Hugging Face's ``add_special_tokens=False``)."""
        if not self.ignore_merges:
            return [self.to_hf[i] for i in self.bpe.encode(
                text, allowed_special=allowed_special, disallowed_special=disallowed_special)]
        known = set(self.special_tokens)
        allowed = known if allowed_special == "all" else set(allowed_special)
        disallowed = known - allowed if disallowed_special == "all" else set(disallowed_special)
        guard = special_splitter(disallowed)
        if guard is not None and (hit := guard.search(text)):
            raise ValueError(f"text contains the special token {hit.group()!r}, which is not in "
                             "allowed_special")
        out: list[int] = []
        for piece, is_special in split_special(text, special_splitter(allowed)):
            if is_special:
                out.append(self.special_tokens[piece])
            else:
                for chunk in self._split.findall(piece):
                    out.extend(self._chunk(chunk))
        return out

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        ours = []
        for i in ids:
            if int(i) not in self.from_hf:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary")
            ours.append(self.from_hf[int(i)])
        return self.bpe.decode(ours, errors=errors)

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, merges={len(self.bpe.merges)})"


def _check(what: str, value: Any, allowed: Collection[Any], path: Path) -> None:
    if value not in allowed:
        raise HubError(f"{path}: {what} = {value!r} is not supported by spiral.hub "
                       f"(supported: {', '.join(map(repr, allowed))})")


def _pattern(pre: Any, path: Path) -> str:
    """The regex of a ByteLevel pre-tokenizer (GPT-2's) or of Split + ByteLevel (Llama 3)."""
    if pre is None:
        raise HubError(f"{path}: pre_tokenizer = None is not supported (byte-level BPE needs one)")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    types = [s.get("type") for s in steps]
    if types == ["ByteLevel"]:
        _check("pre_tokenizer.use_regex", steps[0].get("use_regex", True), [True], path)
        _check("pre_tokenizer.add_prefix_space", steps[0].get("add_prefix_space"), [False], path)
        return GPT2_PATTERN
    if types == ["Digits", "ByteLevel"]:  # SmolLM / StarCoder: every digit its own piece
        _check("Digits.individual_digits", steps[0].get("individual_digits"), [True], path)
        _check("ByteLevel.use_regex", steps[1].get("use_regex", True), [True], path)
        _check("ByteLevel.add_prefix_space", steps[1].get("add_prefix_space"), [False], path)
        return DIGITS_PATTERN
    if types == ["Split", "ByteLevel"]:
        split, level = steps
        _check("Split.behavior", split.get("behavior"), ["Isolated"], path)
        _check("Split.invert", split.get("invert", False), [False], path)
        _check("ByteLevel.use_regex", level.get("use_regex"), [False], path)
        _check("ByteLevel.add_prefix_space", level.get("add_prefix_space"), [False], path)
        if "Regex" not in split.get("pattern", {}):
            raise HubError(f"{path}: a Split pre-tokenizer without a Regex is not supported")
        return str(split["pattern"]["Regex"])
    raise HubError(f"{path}: pre_tokenizer {' + '.join(map(str, types))} is not supported by "
                   "spiral.hub (supported: ByteLevel, or Split(Regex) + ByteLevel)")


def load_hf_tokenizer(path: str | Path) -> HFTokenizer:
    """Read a byte-level BPE ``tokenizer.json`` into an :class:`HFTokenizer`."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec["model"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HubError(f"{path}: not a readable tokenizer.json ({err})") from None
    _check("model.type", model.get("type"), ["BPE"], path)
    _check("normalizer", spec.get("normalizer"), [None], path)
    for key, ok in (("byte_fallback", [False, None]), ("dropout", [None]),
                    ("continuing_subword_prefix", [None, ""]), ("end_of_word_suffix", [None, ""])):
        _check(f"model.{key}", model.get(key), ok, path)
    pattern = _pattern(spec.get("pre_tokenizer"), path)
    char_to_byte = {c: b for b, c in bytes_to_unicode().items()}

    def to_bytes(tok: str) -> bytes:
        try:
            return bytes(char_to_byte[ch] for ch in tok)
        except KeyError:
            raise HubError(f"{path}: token {tok!r} is not byte-level (a character outside "
                           "GPT-2's byte alphabet)") from None

    vocab: dict[str, int] = model["vocab"]
    ids_of = {to_bytes(t): i for t, i in vocab.items()}
    missing = [b for b in range(256) if bytes([b]) not in ids_of]
    if missing:
        raise HubError(f"{path}: the vocabulary lacks byte {missing[0]} ({len(missing)} bytes "
                       "missing); byte-level BPE needs all 256 byte tokens")
    ours = {bytes([b]): b for b in range(256)}
    merges: list[tuple[int, int]] = []
    to_hf = [ids_of[bytes([b])] for b in range(256)]
    for k, m in enumerate(model["merges"]):
        a, b = m.split(" ") if isinstance(m, str) else m
        left, right = to_bytes(a), to_bytes(b)
        if left not in ours or right not in ours or left + right not in ids_of:
            raise HubError(f"{path}: merge {k} ({a!r}, {b!r}) uses or makes a token not defined "
                           "before it; spiral.hub needs merges in training order")
        merges.append((ours[left], ours[right]))
        ours.setdefault(left + right, 256 + k)
        to_hf.append(ids_of[left + right])
    added = [t for t in spec.get("added_tokens", [])]
    for t in added:
        for flag in ("single_word", "lstrip", "rstrip"):
            _check(f"added token {t.get('content')!r} {flag}", t.get(flag, False), [False], path)
    specials = [t["content"] for t in added]
    bpe = BPETokenizer(merges, pattern=pattern, special_tokens=specials)
    to_hf += [int(t["id"]) for t in added]
    n = max([*vocab.values(), *to_hf]) + 1
    whole = {b: i for b, i in ids_of.items()} if model.get("ignore_merges") else None
    return HFTokenizer(bpe, to_hf, n, bool(model.get("ignore_merges")), whole)
