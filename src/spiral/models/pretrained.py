"""Pretrained models by name: a folder of safetensors weights, JSON config, tokenizer, record.

A pretrained model is a folder with five files, none of which can run code when read:

    model.safetensors   the weights (spiral.checkpoint's format: JSON header + raw bytes)
    config.json         {"format": "spiral-pretrained", "version": 1, "architecture": "GPT",
                         "model": GPTConfig fields, "tokenizer": "byte" | "char" | "bpe"}
    tokenizer.json      the tokenizer's state (BPE: its own JSON; char: the characters)
    training.json       the training record (data, split, steps, seed, loss history, ...)
    SHA256SUMS          "<sha256>  <file>" for the four files above (``sha256sum -c`` reads it)

:func:`load_pretrained` finds the folder by name (``$SPIRAL_MODELS_DIR``, else the
repository's ``models/``) or by path, recomputes every SHA-256 before reading a byte of it
as data, checks that the config builds a GPT, that the tokenizer's vocabulary and the
weights' shapes fit it and (optionally) that it equals the config the caller expects, and
refuses with one clear :class:`PretrainedError` line otherwise. A name in ``REGISTRY`` also
pins the SHA-256 of its SHA256SUMS, so a folder edited together with its sums is refused too.
:func:`train_tiny_standin` trains a small model in seconds for the tests of later stages.
Chapter: stage 14 (the book's model).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from spiral.models.gpt import GPT, GPTConfig

__all__ = ["PretrainedError", "Pretrained", "REGISTRY", "BOOK_MODEL", "models_dir",
           "save_pretrained", "load_pretrained", "train_tiny_standin"]

FORMAT, VERSION = "spiral-pretrained", 1
FILES = ("model.safetensors", "config.json", "tokenizer.json", "training.json")
SUMS = "SHA256SUMS"
# name -> SHA-256 of its SHA256SUMS (committed models; the pin of a trained artefact)
REGISTRY: dict[str, str] = {
    "spiral-book": "65c78240be6496b7d61db65a776d115d56880c729d6bd535b8e24d08609b8ea9",
}
BOOK_MODEL = "spiral-book"     # the book's model (stage 14), used by stages 15-18 and the tour


class PretrainedError(RuntimeError):
    """A pretrained folder that is missing, altered, or does not fit its config."""


@dataclass
class Pretrained:
    model: GPT
    tokenizer: Any
    config: GPTConfig
    record: dict[str, Any]
    path: Path
    sha256: dict[str, str]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def models_dir() -> Path:
    """Where models are found by name: ``$SPIRAL_MODELS_DIR`` or ``<repository>/models``."""
    env = os.environ.get("SPIRAL_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "models"


def _tokenizer_state(tokenizer: Any) -> tuple[str, dict[str, Any]]:
    from spiral.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer

    if isinstance(tokenizer, ByteTokenizer):
        return "byte", {"type": "byte"}
    if isinstance(tokenizer, CharTokenizer):
        return "char", {"type": "char", "chars": tokenizer.itos}
    if isinstance(tokenizer, BPETokenizer):
        return "bpe", tokenizer.to_dict()
    raise PretrainedError(f"cannot save a {type(tokenizer).__name__}; byte, char or bpe only")


def save_pretrained(folder: str | os.PathLike[str], model: GPT, tokenizer: Any,
                    record: dict[str, Any]) -> Path:
    """Write the five files (weights as float32) and return the folder."""
    from spiral import checkpoint

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind, tok_state = _tokenizer_state(tokenizer)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise PretrainedError(f"tokenizer has {tokenizer.vocab_size} tokens, the model "
                              f"{model.config.vocab_size}")
    checkpoint.save(folder / FILES[0], model, meta={"architecture": "GPT"})
    config = {"format": FORMAT, "version": VERSION, "architecture": "GPT",
              "model": model.config.to_dict(), "tokenizer": kind}
    for name, obj in ((FILES[1], config), (FILES[2], tok_state), (FILES[3], record)):
        (folder / name).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    sums = "".join(f"{_sha256(folder / f)}  {f}\n" for f in FILES)
    (folder / SUMS).write_text(sums, encoding="utf-8")
    return folder


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        return p
    candidate = models_dir() / str(name_or_path)
    if candidate.is_dir():
        return candidate
    raise PretrainedError(f"no pretrained model {str(name_or_path)!r}: not a folder and not "
                          f"in {models_dir()} (set SPIRAL_MODELS_DIR to look elsewhere)")


def _verify(folder: Path, name: str) -> dict[str, str]:
    for f in (*FILES, SUMS):
        if not (folder / f).is_file():
            raise PretrainedError(f"{folder}: missing file {f}")
    listed: dict[str, str] = {}
    for line in (folder / SUMS).read_text(encoding="utf-8").splitlines():
        digest, _, fname = line.partition("  ")
        listed[fname.strip()] = digest.strip()
    for f in FILES:
        if f not in listed:
            raise PretrainedError(f"{folder}: {SUMS} has no checksum for {f}")
        actual = _sha256(folder / f)
        if actual != listed[f]:
            raise PretrainedError(f"{folder}: checksum mismatch for {f}: {SUMS} says "
                                  f"{listed[f][:12]}…, the file is {actual[:12]}… "
                                  "(changed or corrupt)")
    if name in REGISTRY and _sha256(folder / SUMS) != REGISTRY[name]:
        raise PretrainedError(f"{folder}: {SUMS} is not the one registered for {name!r}")
    return listed


def _config(folder: Path, expected: dict[str, Any] | None) -> tuple[GPTConfig, dict[str, Any]]:
    meta = json.loads((folder / FILES[1]).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise PretrainedError(f"{folder}: config.json is not {FORMAT} version {VERSION}")
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(meta.get("model", {})) - known)
    if unknown:
        raise PretrainedError(f"{folder}: config mismatch: unknown GPTConfig field(s) {unknown}")
    try:
        config = GPTConfig(**meta["model"])
    except (TypeError, ValueError) as e:
        raise PretrainedError(f"{folder}: config mismatch: {e}") from None
    for key, want in (expected or {}).items():
        have = getattr(config, key, None)
        if have != want:
            raise PretrainedError(f"{folder}: config mismatch: {key} is {have!r}, "
                                  f"expected {want!r}")
    return config, meta


def _tokenizer(folder: Path, kind: str) -> Any:
    from spiral.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer

    state = json.loads((folder / FILES[2]).read_text(encoding="utf-8"))
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind == "bpe":
        return BPETokenizer.load(folder / FILES[2])
    raise PretrainedError(f"{folder}: unknown tokenizer type {kind!r}")


def load_pretrained(name_or_path: str | os.PathLike[str], *,
                    expected_config: dict[str, Any] | None = None,
                    dtype: Any = np.float32) -> Pretrained:
    """The model, tokenizer, config and record of a verified pretrained folder."""
    from spiral import checkpoint

    folder = _resolve(name_or_path)
    sums = _verify(folder, str(name_or_path))
    config, meta = _config(folder, expected_config)
    tokenizer = _tokenizer(folder, meta.get("tokenizer", ""))
    if tokenizer.vocab_size != config.vocab_size:
        raise PretrainedError(f"{folder}: config mismatch: vocab_size {config.vocab_size}, "
                              f"the tokenizer has {tokenizer.vocab_size} tokens")
    model = GPT(config, rng=np.random.default_rng(0), dtype=dtype)
    try:
        checkpoint.load(folder / FILES[0], model)
    except checkpoint.CheckpointError as e:
        raise PretrainedError(f"{folder}: config mismatch: the weights do not fit: {e}") from None
    model.eval()
    record = json.loads((folder / FILES[3]).read_text(encoding="utf-8"))
    return Pretrained(model, tokenizer, config, record, folder, sums)


STANDIN = dict(context_length=32, n_layers=2, n_heads=4, n_kv_heads=2, d_model=32,
               norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves")


def train_tiny_standin(folder: str | os.PathLike[str], seed: int = 0, steps: int = 60,
                       corpus: str = "shakespeare") -> Pretrained:
    """Train a Llama-style byte-level model (about 31 k parameters) for ``steps`` steps on the
    corpus's training split — seconds on one core — save it to ``folder`` and load it back.
    A stand-in with the book's model's interface for the tests of stages 15–18."""
    from spiral.data import get_splits
    from spiral.tokenizers import ByteTokenizer
    from spiral.train import TrainConfig, train

    tok = ByteTokenizer()
    splits = get_splits(corpus)
    train_ids = np.array(tok.encode(splits.train), dtype=np.int64)
    val_ids = np.array(tok.encode(splits.val), dtype=np.int64)
    config = GPTConfig(vocab_size=tok.vocab_size, **STANDIN)  # type: ignore[arg-type]
    model = GPT(config, rng=np.random.default_rng(seed))
    tc = TrainConfig(max_steps=steps, batch_size=16, seq_len=config.context_length, lr=3e-3,
                     warmup_steps=min(10, steps // 5), eval_interval=steps, eval_tokens=4096,
                     seed=seed, progress=False)
    state = train(model, model.configure_optimizer(lr=tc.lr), train_ids, val_ids, tc,
                  np.random.default_rng(seed))
    record = {"purpose": "tiny stand-in for tests (not the book's model)", "corpus": corpus,
              "split": "train (validation scored on val)", "tokenizer": "byte", "seed": seed,
              "train_config": asdict(tc), "history": state.history,
              "n_params": model.num_parameters()}
    save_pretrained(folder, model, tok, record)
    return load_pretrained(folder)
