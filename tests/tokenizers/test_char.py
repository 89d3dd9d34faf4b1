"""CharTokenizer: the shared tokenizer interface, round trips, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.tokenizers.char import CharTokenizer

pytestmark = pytest.mark.foundation


@settings(deadline=None, max_examples=60)
@given(st.text(min_size=1, max_size=200))
def test_round_trip_and_vectorised_encode_agree(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert np.array_equal(tok.encode_array(text), np.array(ids, dtype=np.int64))
    assert tok.vocab_size == len(set(text))


def test_unknown_characters_are_clear_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode_array("abz")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([3])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
