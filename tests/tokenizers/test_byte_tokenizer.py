"""ByteTokenizer: UTF-8 bytes as ids, the alphabet byte-level BPE starts from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.tokenizers.bpe import BPETokenizer
from spiral.tokenizers.byte import ByteTokenizer

pytestmark = pytest.mark.stage10


@settings(max_examples=100, deadline=None)
@given(s=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=50))
def test_roundtrip_and_equals_bpe_with_no_merges(s):
    tok = ByteTokenizer()
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert len(ids) == len(s.encode("utf-8"))
    assert ids == BPETokenizer().encode(s)


def test_lone_surrogate_and_bad_ids_are_clear_errors():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("a\udcff")
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode([256])
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # truncated UTF-8 is replaced by default
