"""Corpora, fixed splits and batches: the data layer every stage reads through.

A small registry names the two corpora of the book (tiny Shakespeare and makemore's
names) with their canonical download address, SHA-256 and licence note. A corpus is looked
up, in order, in an explicit path, in ``$SPIRAL_DATA_DIR``, in the user cache directory,
and only then downloaded (checksum verified, written atomically so that nothing half-written
is ever kept). Any UTF-8 text file works in place of a registered corpus.

Splits are fixed and documented (chapter "Foundations", DESIGN.md):

* tiny Shakespeare: first 90 % train, last 10 % validation, as nanoGPT; hyperparameters
  are tuned on the last 10 % of the training region (:meth:`TextSplits.tune_split`).
* names: ``names.txt`` holds duplicates, so it is deduplicated first (keeping first
  occurrences), then shuffled with ``np.random.default_rng(42)`` into 80/10/10. The
  corpus is a stream ``"\\nemma\\nolivia\\n..."``: newline is the end/begin marker
  (makemore's ``.``), so every letter and every end-of-name is scored.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Corpus:
    """A registered corpus: where it comes from and how to check it."""

    name: str
    filename: str
    url: str
    sha256: str
    licence: str
    description: str


REGISTRY: dict[str, Corpus] = {
    "shakespeare": Corpus(
        name="shakespeare",
        filename="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        licence="Shakespeare's plays are in the public domain; compilation from char-rnn (MIT).",
        description="tiny Shakespeare: 1,115,394 characters of plays (Karpathy, char-rnn)",
    ),
    "names": Corpus(
        name="names",
        filename="names.txt",
        url="https://raw.githubusercontent.com/karpathy/makemore/master/names.txt",
        sha256="0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
        licence="US Social Security baby names (public data); file from makemore (MIT).",
        description="makemore's names: 32,033 lower-case first names, one per line",
    ),
}

ALIASES = {"tinyshakespeare": "shakespeare", "tiny_shakespeare": "shakespeare"}


class DataError(RuntimeError):
    """A corpus could not be found, fetched, verified or decoded."""


def cache_dir() -> Path:
    """The user cache directory where downloaded corpora are kept."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("spiral")) / "data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(corpus: Corpus, dest: Path, timeout: float = 30.0) -> Path:
    """Fetch ``corpus`` to ``dest`` atomically; verify its checksum before keeping it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{corpus.filename}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(corpus.url, timeout=timeout) as r:
            while block := r.read(1 << 20):
                out.write(block)
        digest = _sha256(tmp)
        if digest != corpus.sha256:
            raise DataError(
                f"checksum mismatch for {corpus.name}: expected {corpus.sha256}, got {digest}. "
                f"The download from {corpus.url} is not the expected file. Download it by hand, "
                f"put it at {dest} or in a folder named by SPIRAL_DATA_DIR."
            )
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DataError(
            f"could not download {corpus.name} from {corpus.url} ({err}). You seem to be "
            f"offline. Fetch the file on a connected machine and either set "
            f"SPIRAL_DATA_DIR to the folder holding '{corpus.filename}', copy it to {dest}, "
            f"or pass its path with --data PATH."
        ) from err
    finally:
        if tmp.exists():
            tmp.unlink()


def resolve(name_or_path: str | os.PathLike[str], *, download: bool = True) -> Path:
    """Find a corpus file: a path, ``$SPIRAL_DATA_DIR``, the cache, then the network."""
    key = str(name_or_path)
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        path = Path(key).expanduser()
        if path.is_file():
            return path
        known = ", ".join(sorted(REGISTRY))
        raise DataError(
            f"'{key}' is neither a registered corpus ({known}) nor an existing file. "
            "Pass a registered name or the path of a UTF-8 text file."
        )
    corpus = REGISTRY[key]
    env = os.environ.get("SPIRAL_DATA_DIR")
    if env:
        candidate = Path(env).expanduser() / corpus.filename
        if candidate.is_file():
            return candidate
    cached = cache_dir() / corpus.filename
    if cached.is_file():
        return cached
    if not download:
        raise DataError(
            f"{corpus.name} is not available locally; set SPIRAL_DATA_DIR to a folder "
            f"holding '{corpus.filename}' or allow the download from {corpus.url}."
        )
    return _download(corpus, cached)


def read_text_file(path: Path) -> str:
    """Read a UTF-8 text file, refusing empty, binary and non-UTF-8 files with a clear error."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty; a corpus needs at least one non-blank character.")
    if b"\x00" in raw[:65536]:
        raise DataError(f"{path} looks binary (it contains NUL bytes); pass a UTF-8 text file.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not valid UTF-8 (byte {err.start}: {raw[err.start:err.start + 4]!r}). "
            "Convert it first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`."
        ) from None


def load_text(name_or_path: str | os.PathLike[str] = "shakespeare") -> str:
    """The full text of a registered corpus or of any UTF-8 file."""
    return read_text_file(resolve(name_or_path))


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class TextSplits:
    """Fixed train / validation (/ test) text of one corpus."""

    name: str
    train: str
    val: str
    test: str | None = None

    def tune_split(self, fraction: float = 0.1) -> tuple[str, str]:
        """(fit, tune): the training region cut so the last ``fraction`` tunes hyperparameters."""
        if self.name == "names":
            names = [n for n in self.train.split("\n") if n]
            cut = len(names) - int(round(fraction * len(names)))
            return names_stream(names[:cut]), names_stream(names[cut:])
        cut = int(len(self.train) * (1.0 - fraction))
        return self.train[:cut], self.train[cut:]


@dataclass(frozen=True)
class NameSplits:
    """Deduplicated names, shuffled with a fixed seed into 80/10/10."""

    train: list[str]
    val: list[str]
    test: list[str]


def parse_names(text: str) -> list[str]:
    """One name per line, surrounding whitespace stripped, blank lines dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def names_stream(names: list[str]) -> str:
    """Names as one stream: ``"\\n" + "emma\\n" + "olivia\\n" ...`` (newline = end marker)."""
    return "\n" + "".join(n + "\n" for n in names)


def names_splits(seed: int = 42, source: str | os.PathLike[str] = "names") -> NameSplits:
    """Deduplicate (keep first occurrences), shuffle with ``default_rng(seed)``, cut 80/10/10."""
    names = list(dict.fromkeys(parse_names(load_text(source))))
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    n1, n2 = int(0.8 * len(shuffled)), int(0.9 * len(shuffled))
    return NameSplits(shuffled[:n1], shuffled[n1:n2], shuffled[n2:])


def names_makemore_split(source: str | os.PathLike[str] = "names") -> NameSplits:
    """makemore's own split (LEAKY: duplicates are not removed, so ~13 % of validation
    names also occur in training). Use only to reproduce makemore's published numbers."""
    import random

    words = parse_names(load_text(source))
    random.seed(42)
    random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return NameSplits(words[:n1], words[n1:n2], words[n2:])


def get_splits(
    name: str | os.PathLike[str] = "shakespeare", train_fraction: float = 0.9
) -> TextSplits:
    """The fixed splits of a corpus; any other text file is cut like tiny Shakespeare."""
    key = ALIASES.get(str(name), str(name))
    if key == "names":
        s = names_splits()
        return TextSplits("names", names_stream(s.train), names_stream(s.val), names_stream(s.test))
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    text = load_text(key)
    cut = int(len(text) * train_fraction)
    if cut == 0 or cut == len(text):
        raise DataError(f"{key} is too short ({len(text)} characters) to split into train and val")
    return TextSplits(Path(key).stem if key not in REGISTRY else key, text[:cut], text[cut:])


def check_char_corpus(splits: TextSplits, window: int) -> None:
    """Raise :class:`DataError` when a corpus's splits cannot train and score a character model
    whose training windows hold ``window`` tokens (the error says what is wrong with the text).
    """
    n_train = len(splits.train)
    if n_train < window + 1:
        raise DataError(
            f"corpus '{splits.name}' is too short: its training part (the first 90 %) has "
            f"{n_train} characters, and one training window needs {window + 1}. Give a longer "
            f"text (at least {int((window + 1) / 0.9) + 2} characters) or a shorter context.")
    if len(splits.val) < 2:
        raise DataError(f"corpus '{splits.name}' leaves fewer than 2 characters for validation;"
                        " give a longer text.")
    unseen = sorted(set(splits.val) - set(splits.train))
    if unseen:
        shown = ", ".join(repr(c) for c in unseen[:8])
        raise DataError(
            f"corpus '{splits.name}': its validation part (the last 10 %) contains characters "
            f"that never occur in its training part ({shown}{', ...' if len(unseen) > 8 else ''})"
            "; a character model cannot score them. Give a longer text whose characters all "
            "appear in its first 90 %.")


# ---------------------------------------------------------------------------- batches


def sample_batch(
    ids: np.ndarray, batch_size: int, context_length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random windows of a token stream: x (B, T) and y = x shifted by one (B, T)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D token stream, got shape {ids.shape}")
    if len(ids) < context_length + 1:
        raise ValueError(
            f"a stream of {len(ids)} tokens is too short for context_length={context_length}"
        )
    starts = rng.integers(0, len(ids) - context_length, size=batch_size)
    offsets = np.arange(context_length + 1)
    windows = ids[starts[:, None] + offsets[None, :]]  # (B, T + 1)
    return windows[:, :-1].astype(np.int64), windows[:, 1:].astype(np.int64)
