"""The data layer: registry, lookup order, clear errors, fixed splits, batches."""

from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from spiral import data

pytestmark = pytest.mark.foundation


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(data, "cache_dir", lambda: cache)
    monkeypatch.delenv("SPIRAL_DATA_DIR", raising=False)
    return cache


def test_registry_checksums_match_local_copies():
    for name, corpus in data.REGISTRY.items():
        path = data.resolve(name, download=False)
        assert data._sha256(path) == corpus.sha256, name


def test_offline_without_copy_is_a_clear_error_and_leaves_nothing(empty_cache, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataError, match="SPIRAL_DATA_DIR"):
        data.load_text("names")
    assert not empty_cache.exists() or not any(empty_cache.iterdir())


def test_checksum_mismatch_is_rejected_and_nothing_kept(empty_cache, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen",
                        lambda *a, **k: io.BytesIO(b"not the real corpus\n"))
    with pytest.raises(data.DataError, match="checksum mismatch"):
        data.load_text("shakespeare")
    assert list(empty_cache.iterdir()) == []


def test_download_verified_then_cached(empty_cache, monkeypatch):
    payload = Path(__file__).parent / "fixtures" / "data" / "names.txt"
    monkeypatch.setattr(data.urllib.request, "urlopen",
                        lambda *a, **k: io.BytesIO(payload.read_bytes()))
    text = data.load_text("names")
    assert text.startswith("emma")
    assert (empty_cache / "names.txt").is_file()


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"   \n\n", "empty"), (b"ab\x00cd", "binary"), (b"caf\xe9\n", "UTF-8")],
)
def test_bad_files_give_clear_errors(tmp_path, content, message):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(data.DataError, match=message):
        data.load_text(p)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(data.DataError, match="neither a registered corpus"):
        data.load_text("no-such-corpus-anywhere")


def test_any_text_file_splits_90_10(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("abcdefghij" * 10, encoding="utf-8")
    s = data.get_splits(str(p))
    assert len(s.train) == 90 and len(s.val) == 10 and s.train + s.val == p.read_text()


def test_shakespeare_split_is_nanogpt_90_10():
    text = data.load_text("shakespeare")
    s = data.get_splits("shakespeare")
    assert s.train + s.val == text
    assert len(s.train) == int(0.9 * len(text))
    fit, tune = s.tune_split()
    assert fit + tune == s.train and abs(len(tune) - 0.1 * len(s.train)) <= 1


def test_names_are_deduplicated_before_splitting():
    raw = data.parse_names(data.load_text("names"))
    s = data.names_splits()
    total = s.train + s.val + s.test
    assert len(total) == len(set(raw)) < len(raw)
    assert not set(s.train) & set(s.val)
    assert not set(s.train) & set(s.test)
    assert not set(s.val) & set(s.test)
    assert (len(s.train), len(s.val)) == (int(0.8 * len(total)), int(0.9 * len(total)) - int(0.8 * len(total)))
    assert data.names_splits().val == s.val  # fixed seed, same split every time


def test_makemore_split_leaks_and_we_say_so():
    m = data.names_makemore_split()
    leak = len(set(m.val) & set(m.train)) / len(m.val)
    assert 0.10 < leak < 0.16  # the ~13 % that the deduplicated split removes
    assert "LEAKY" in (data.names_makemore_split.__doc__ or "")


def test_names_stream_scores_every_end_of_name():
    assert data.names_stream(["ab", "c"]) == "\nab\nc\n"
    fit, tune = data.get_splits("names").tune_split()
    assert fit.startswith("\n") and tune.startswith("\n") and tune.endswith("\n")


def test_sample_batch_targets_are_shifted_inputs(rng):
    ids = np.arange(100)
    x, y = data.sample_batch(ids, 8, 16, rng)
    assert x.shape == y.shape == (8, 16)
    assert np.array_equal(y, x + 1)
    with pytest.raises(ValueError, match="too short"):
        data.sample_batch(np.arange(5), 2, 16, rng)
