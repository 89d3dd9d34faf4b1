"""Byte-level BPE: hand-worked merges, round trips, trainer equivalence, persistence,
special tokens, and a cross-check against HF ``tokenizers``."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.tokenizers.bpe import (
    BPETokenizer,
    compression,
    merge_pair,
    train_merges_fast,
    train_merges_naive,
)
from spiral.tokenizers.pretokenize import GPT4_PATTERN, chunk_counts

pytestmark = pytest.mark.stage10

CORPUS = (
    "The quick brown fox jumps over the lazy dog. 1234 + 5678 = 6912!\n"
    "Naïve café owners in Zürich eat crème brûlée; 東京 and 서울 too. 🦊🦊🐶\n"
    "  indented   spaces\tand\ttabs\n\n"
) * 5

# Every Unicode scalar value: all code points except the surrogates U+D800..U+DFFF.
scalar_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60
)
tricky_text = st.lists(
    st.sampled_from(
        ["a", " ", "\n", "\t", "\x00", "\x1b", "é", "e\u0301", "\u200d", "🦊", "👩‍👩‍👧", "1", "'s"]
    ),
    max_size=40,
).map("".join)


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    return BPETokenizer(special_tokens=["<|endoftext|>"]).train(CORPUS, vocab_size=300)


def test_merge_pair_is_left_to_right_non_overlapping():
    assert merge_pair([1, 1, 1, 1, 1], (1, 1), 9) == [9, 9, 1]
    assert merge_pair([1, 2, 3], (2, 3), 9) == [1, 9]
    assert merge_pair([], (1, 2), 9) == []


def test_hand_worked_merges():
    # Chunks "aaab" x1 and "ab" x2 (no pre-tokenizer splits inside them).
    # Pair counts: (a,a)=2, (a,b)=1+2=3 -> merge (97, 98) -> 256.
    # Now "aa"+256 and 256, 256: (a,a)=1, (a,256)=1 -> tie at 1, smallest pair (97, 97) wins.
    # Then "aaab" = [257, 256]: only pair (257, 256) with count 1.
    chunks = {b"aaab": 1, b"ab": 2}
    for trainer in (train_merges_naive, train_merges_fast):
        assert trainer(chunks, 10) == [((97, 98), 3), ((97, 97), 1), ((257, 256), 1)]


def test_hand_worked_encoding_replays_training_order():
    tok = BPETokenizer(merges=[(97, 98), (256, 99), (98, 99)])  # ab, abc, bc
    # "abc": ranks present (a,b)=0 and (b,c)=2 -> merge ab first, then (ab, c) -> abc.
    assert tok.encode("abc") == [257]
    assert tok.encode("bcab") == [258, 256]
    assert tok.vocab[257] == b"abc"


def test_train_vocab_size_counts_bytes_merges_and_specials(trained):
    assert trained.vocab_size == 300
    assert len(trained.merges) == 300 - 256 - 1
    assert trained.special_tokens == {"<|endoftext|>": 299}


@pytest.mark.parametrize("pattern_name", ["gpt2", "gpt4"])
@pytest.mark.parametrize("vocab_size", [257, 300, 600])
def test_fast_trainer_equals_naive(pattern_name, vocab_size):
    pattern = GPT4_PATTERN if pattern_name == "gpt4" else None
    corpora = [CORPUS, "ab" * 50 + " abab" * 7 + "ba" * 3, "aaaaaaaaaa aaaa aaa a" * 3]
    for text in corpora:
        chunks = chunk_counts(text, pattern) if pattern else chunk_counts(text)
        n = vocab_size - 256
        assert train_merges_fast(chunks, n) == train_merges_naive(chunks, n)


def test_fast_equals_naive_on_shakespeare_prefix(shakespeare_prefix):
    chunks = chunk_counts(shakespeare_prefix[:30_000])
    assert train_merges_fast(chunks, 250) == train_merges_naive(chunks, 250)


@pytest.mark.slow
def test_fast_equals_naive_on_all_of_shakespeare():
    from spiral import data

    chunks = chunk_counts(data.load_text("shakespeare"))
    assert train_merges_fast(chunks, 256) == train_merges_naive(chunks, 256)


@pytest.fixture(scope="module")
def shakespeare_prefix() -> str:
    path = os.path.join(os.environ.get("SPIRAL_DATA_DIR", "../shared/data"), "tinyshakespeare.txt")
    if not os.path.exists(path):
        pytest.skip("tiny Shakespeare not available (set SPIRAL_DATA_DIR)")
    with open(path, encoding="utf-8") as f:
        return f.read()[:60_000]


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer().train("ab ab", vocab_size=1000)
    assert tok.merges == [(97, 98), (32, 256)]
    assert tok.vocab_size == 258


@settings(max_examples=150, deadline=None)
@given(s=scalar_text)
def test_roundtrip_any_scalar_string(trained, s):
    assert trained.decode(trained.encode(s)) == s


@settings(max_examples=150, deadline=None)
@given(s=tricky_text)
def test_roundtrip_emoji_combining_marks_control_chars(trained, s):
    ids = trained.encode(s)
    assert trained.decode(ids) == s
    assert all(0 <= i < trained.vocab_size for i in ids)


@pytest.mark.parametrize("s", ["abc\ud800def", "\udfff", "x\udc80"])
def test_lone_surrogate_is_a_clear_error(trained, s):
    with pytest.raises(ValueError, match="lone surrogate U\\+D"):
        trained.encode(s)


@settings(max_examples=60, deadline=None)
@given(a=scalar_text, b=scalar_text)
def test_special_tokens_are_never_split(trained, a, b):
    eot = trained.special_tokens["<|endoftext|>"]
    ids = trained.encode(a + "<|endoftext|>" + b, allowed_special="all")
    assert eot in ids
    assert trained.decode(ids) == a + "<|endoftext|>" + b
    # ... and the special token's text never arises from ordinary merges.
    assert eot not in trained.encode_ordinary(a + "<|endoftext|>" + b)


def test_special_token_text_is_excluded_from_training():
    text = ("hello<|endoftext|>" * 50)
    tok = BPETokenizer(special_tokens=["<|endoftext|>"]).train(text, vocab_size=300)
    assert all(b"<|" not in t and b"|>" not in t for t in tok.vocab[256:])


def test_save_load_roundtrip(tmp_path, trained):
    path = tmp_path / "tok.json"
    trained.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == trained.merges
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.pattern == trained.pattern
    assert loaded.encode(CORPUS) == trained.encode(CORPUS)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["merged_tokens"][0] == trained.vocab[256].decode("utf-8", "backslashreplace")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temporary left behind


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "invalid JSON"),
        ('{"format": "other"}', "format"),
        ('{"format": "spiral-bpe", "version": 1, "pattern": "x", "special_tokens": []}', "merges"),
        (
            '{"format": "spiral-bpe", "version": 1, "pattern": "x", "special_tokens": [],'
            ' "merges": [[1, 300]]}',
            "not yet defined",
        ),
        (
            '{"format": "spiral-bpe", "version": 1, "pattern": "x", "special_tokens": [],'
            ' "merges": [["a", 1]]}',
            "pairs",
        ),
    ],
)
def test_malformed_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(path)


def test_decode_rejects_unknown_ids(trained):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        trained.decode([trained.vocab_size])


def test_compression_matches_hf_bytelevel_bpe(shakespeare_prefix):
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    hf = pytest.importorskip("tokenizers")
    text = shakespeare_prefix
    train, held = text[:50_000], text[50_000:]
    for vocab_size in (300, 700):
        ref = hf.Tokenizer(hf.models.BPE())
        ref.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = hf.trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        ref.train_from_iterator([train], trainer)
        ours = BPETokenizer().train(train, vocab_size)
        theirs = len(held.encode("utf-8")) / len(ref.encode(held).ids)
        assert abs(compression(ours, held) / theirs - 1) < 0.01


def test_tiktoken_with_our_merges_gives_our_ids(shakespeare_prefix):
    tiktoken = pytest.importorskip("tiktoken")
    from spiral.tokenizers.pretokenize import GPT2_PATTERN

    tok = BPETokenizer().train(shakespeare_prefix[:40_000], vocab_size=600)
    ranks = {b: i for i, b in enumerate(tok.vocab)}
    assert len(ranks) == len(tok.vocab)  # no two merges spell the same bytes here
    enc = tiktoken.Encoding(
        name="spiral-test", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )
    held = shakespeare_prefix[40_000:] + " naïve 東京 🦊 1234567"
    assert enc.encode_ordinary(held) == tok.encode(held)


def test_special_tokens_follow_tiktoken_rules(trained):
    """Regression: encode() turned user-typed "<|endoftext|>" into the control token by
    default. Now, as in tiktoken, special-token text must be allowed explicitly, is refused by
    default, and is plain text with ``disallowed_special=()``; ids agree with tiktoken's."""
    text = "a<|endoftext|>b"
    eot = trained.special_tokens["<|endoftext|>"]
    with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>'"):
        trained.encode(text)
    assert eot in trained.encode(text, allowed_special="all")
    assert trained.encode(text, allowed_special={"<|endoftext|>"}) == trained.encode(
        text, allowed_special="all")
    assert eot not in trained.encode(text, disallowed_special=())
    assert trained.encode(text, disallowed_special=()) == trained.encode_ordinary(text)
    assert trained.encode("no specials here") == trained.encode_ordinary("no specials here")
    with pytest.raises(ValueError, match="unknown special tokens"):
        trained.encode(text, allowed_special={"<|eot|>"})
    with pytest.raises(TypeError, match="'all' or a set"):
        trained.encode(text, allowed_special=True)

    tiktoken = pytest.importorskip("tiktoken")
    ranks = {b: i for i, b in enumerate(trained.vocab)}
    assert len(ranks) == len(trained.vocab)
    enc = tiktoken.Encoding(name="spiral-test", pat_str=trained.pattern, mergeable_ranks=ranks,
                            special_tokens=trained.special_tokens)
    with pytest.raises(ValueError):
        enc.encode(text)  # tiktoken's default refuses too
    for kwargs in ({"allowed_special": "all"}, {"disallowed_special": ()},
                   {"allowed_special": {"<|endoftext|>"}}):
        assert trained.encode(text, **kwargs) == enc.encode(text, **kwargs), kwargs


def _cl100k_pattern(monkeypatch) -> str:
    """tiktoken's own cl100k_base pre-tokenizer pattern (read from tiktoken, no download)."""
    pytest.importorskip("tiktoken")
    import tiktoken_ext.openai_public as public

    monkeypatch.setattr(public, "load_tiktoken_bpe", lambda *a, **k: {})
    return public.cl100k_base()["pat_str"]


def _whitespace_heavy_strings(n: int, seed: int = 0) -> list[str]:
    import random

    pieces = ["a", "Bc", "'s", "'LL", "'", " ", "  ", "\n", "\r\n", "\r", "\t", " \t", "中",
              "é", "1", "2345", "!", "?!", ".", "🦊", "\u00a0", "x'y"]
    r = random.Random(seed)
    return ["".join(r.choices(pieces, k=r.randint(1, 10))) for _ in range(n)]


def test_gpt4_pattern_splits_like_tiktoken_cl100k(monkeypatch):
    """Regression: GPT4_PATTERN lacked cl100k's ``\\s++$`` branch and ended in ``\\s+``, so it
    split 773 of 20,000 whitespace-heavy strings differently from tiktoken."""
    import regex

    theirs = regex.compile(_cl100k_pattern(monkeypatch))
    ours = regex.compile(GPT4_PATTERN)
    for s in _whitespace_heavy_strings(20_000) + ["a's中  \r\n\t", "x  \n", "  \n\t ", "a \t"]:
        assert ours.findall(s) == theirs.findall(s), repr(s)


def test_gpt4_pattern_ids_equal_tiktoken_engine(monkeypatch):
    """The same merges under tiktoken's own (Rust) regex engine and its cl100k pattern give
    the same ids as our tokenizer with GPT4_PATTERN, on whitespace-heavy text."""
    tiktoken = pytest.importorskip("tiktoken")
    pattern = _cl100k_pattern(monkeypatch)
    stress = _whitespace_heavy_strings(3000, seed=1)
    # one merge per ordered pair of whitespace bytes: a chunk boundary inside a whitespace
    # run then changes the ids, so the two engines must cut every run in the same places
    ws = (9, 10, 13, 32)
    tok = BPETokenizer(merges=[(a, b) for a in ws for b in ws], pattern=GPT4_PATTERN)
    ranks = {b: i for i, b in enumerate(tok.vocab)}
    assert len(ranks) == len(tok.vocab)
    enc = tiktoken.Encoding(name="spiral-cl100k-test", pat_str=pattern, mergeable_ranks=ranks,
                            special_tokens={})
    for s in stress:
        assert tok.encode(s) == enc.encode_ordinary(s), repr(s)


def test_long_chunks_are_not_kept_in_the_encode_cache(trained):
    """Regression: every distinct chunk was cached, so a megabyte of base64 or digits kept
    its (16 kB-long) chunks alive as dictionary keys."""
    long_chunk = "x" * 5000
    ids = trained.encode(long_chunk + " the")
    assert trained.decode(ids) == long_chunk + " the"
    assert long_chunk not in trained._cache and " the" in trained._cache
