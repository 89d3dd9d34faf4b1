"""Unigram LM tokenizer: Viterbi and forward-backward against brute force, round trips."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.tokenizers.unigram import UnigramTokenizer, expected_counts, viterbi

pytestmark = pytest.mark.stage10

LOGP = {"a": -2.0, "b": -2.5, "c": -3.0, "ab": -2.2, "bc": -2.9, "abc": -4.0, "ca": -3.3}


def segmentations(s: str, vocab) -> list[list[str]]:
    out = []
    for cuts in itertools.product([0, 1], repeat=len(s) - 1):
        pieces, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                pieces.append(s[start:i])
                start = i
        pieces.append(s[start:])
        if all(p in vocab for p in pieces):
            out.append(pieces)
    return out


@pytest.mark.parametrize("s", ["abc", "abcabc", "cab", "bcaab", "a"])
def test_viterbi_is_the_best_of_all_segmentations(s):
    segs = segmentations(s, LOGP)
    best = max(segs, key=lambda seg: sum(LOGP[p] for p in seg))
    score, pieces = viterbi(s, LOGP, max_len=3)
    assert pieces == best
    assert score == pytest.approx(sum(LOGP[p] for p in best))


@pytest.mark.parametrize("s", ["abc", "abcab", "cabca"])
def test_forward_backward_matches_enumeration(s):
    segs = segmentations(s, LOGP)
    weights = [math.exp(sum(LOGP[p] for p in seg)) for seg in segs]
    z = sum(weights)
    brute: dict[str, float] = {}
    for seg, w in zip(segs, weights):
        for p in seg:
            brute[p] = brute.get(p, 0.0) + 3 * w / z
    counts, ll = expected_counts({s: 3}, LOGP, max_len=3)
    assert ll == pytest.approx(3 * math.log(z), rel=1e-12)
    assert set(counts) == set(brute)
    for p in brute:
        assert counts[p] == pytest.approx(brute[p], rel=1e-9)


@pytest.fixture(scope="module")
def unigram() -> UnigramTokenizer:
    text = "the cat sat on the mat; the cattle sat on the matte. 12 34\n" * 20
    return UnigramTokenizer().train(text, vocab_size=256 + 40)


def test_vocab_size_and_learned_pieces(unigram):
    # vocab_size is an upper bound: EM drops pieces whose expected count vanishes.
    assert 256 + 20 < unigram.vocab_size <= 296
    assert any(len(p) > 2 for p in unigram.pieces)  # it learned multi-character pieces
    assert unigram.encode(" the") == [unigram.piece_id[" the"]]


@settings(max_examples=100, deadline=None)
@given(s=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_roundtrip_with_byte_fallback(unigram, s):
    assert unigram.decode(unigram.encode(s)) == s


def test_lone_surrogate_is_a_clear_error(unigram):
    with pytest.raises(ValueError, match="lone surrogate"):
        unigram.encode("\ud83d")


def test_too_small_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="distinct characters"):
        UnigramTokenizer().train("abcdef", vocab_size=258)
