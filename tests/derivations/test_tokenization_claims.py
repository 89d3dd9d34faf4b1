"""Claims the tokenization chapter derives, each checked numerically (stage 10)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from spiral.experiments.tokenization.compression import entropy_bits, huffman_lengths
from spiral.experiments.tokenization.vocab_cost import costs
from spiral.tokenizers.bpe import BPETokenizer, merge_pair, train_merges_fast
from spiral.tokenizers.pretokenize import chunk_counts
from spiral.tokenizers.unigram import expected_counts

pytestmark = pytest.mark.stage10


@pytest.fixture(scope="module")
def text() -> str:
    path = os.path.join(os.environ.get("SPIRAL_DATA_DIR", "../shared/data"), "tinyshakespeare.txt")
    if not os.path.exists(path):
        pytest.skip("tiny Shakespeare not available (set SPIRAL_DATA_DIR)")
    with open(path, encoding="utf-8") as f:
        return f.read()[:80_000]


def test_each_merge_saves_exactly_its_count_without_overlapping_runs():
    # No chunk holds a run of 3+ equal symbols, so every counted pair is replaced.
    corpus = "the cat sat on the mat with the hat; a bat at that flat " * 7
    tok = BPETokenizer().train(corpus, vocab_size=300)
    assert len(tok.encode(corpus)) == len(corpus.encode()) - sum(tok.merge_counts)


def test_overlapping_pair_count_overstates_the_saving():
    # "aaa" holds the pair (a, a) twice, but only one non-overlapping merge fits.
    chunks = {b"aaa": 1}
    (pair, count), *_ = train_merges_fast(chunks, 1)
    assert pair == (97, 97) and count == 2
    assert len(merge_pair(list(b"aaa"), pair, 256)) == 3 - 1


def test_merge_counts_never_increase(text):
    counts = BPETokenizer().train(text, vocab_size=1256).merge_counts
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_rank_order_encoding_replays_training_order(text):
    tok = BPETokenizer().train(text, vocab_size=800)
    for chunk in list(chunk_counts(text))[:400]:
        ids = list(chunk)
        for k, pair in enumerate(tok.merges):  # apply every merge, in training order
            ids = merge_pair(ids, pair, 256 + k)
        assert tok._encode_chunk(chunk) == ids


@pytest.mark.parametrize("seed", range(5))
def test_shannon_bound_and_huffman_within_one_bit(seed):
    rng = np.random.default_rng(seed)
    counts = {i: int(c) for i, c in enumerate(rng.integers(1, 1000, size=rng.integers(2, 60)))}
    n = sum(counts.values())
    h = entropy_bits(counts)
    lengths = huffman_lengths(counts)
    avg = sum(counts[s] * lengths[s] for s in counts) / n
    assert h <= avg + 1e-12 < h + 1  # H <= L < H + 1
    assert math.isclose(sum(2.0 ** -lengths[s] for s in counts), 1.0)  # a full prefix code
    shannon = {s: math.ceil(-math.log2(c / n)) for s, c in counts.items()}
    assert sum(2.0 ** -l for l in shannon.values()) <= 1.0  # Kraft: Shannon's code exists
    assert avg <= sum(counts[s] * shannon[s] for s in counts) / n + 1e-12  # Huffman is optimal


def test_unigram_em_never_decreases_the_likelihood():
    chunks = {" the": 9, " then": 4, " there": 3, " other": 2, " he": 5, " hen": 1}
    pieces = {s[i:j] for s in chunks for i in range(len(s)) for j in range(i + 1, len(s) + 1)}
    logp = {p: -math.log(len(pieces)) for p in pieces}
    previous = -math.inf
    for _ in range(15):
        counts, ll = expected_counts(chunks, logp, max_len=8)
        assert ll >= previous - 1e-9
        previous = ll
        z = sum(counts.values())
        logp = {p: math.log(c / z) for p, c in counts.items() if c > 0}


def test_attention_cost_scales_with_the_square_of_the_token_count():
    short = costs(bytes_per_token=4.0, vocab_size=1000, d_model=64, n_layers=2, window_bytes=512)
    long = costs(bytes_per_token=2.0, vocab_size=1000, d_model=64, n_layers=2, window_bytes=512)
    assert long["tokens_per_window"] == 2 * short["tokens_per_window"]
    assert math.isclose(long["attention_flops_per_byte"], 4 * short["attention_flops_per_byte"])
    assert math.isclose(long["softmax_flops_per_byte"], 2 * short["softmax_flops_per_byte"])
