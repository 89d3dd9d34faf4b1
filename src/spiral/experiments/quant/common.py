"""What the stage-18 experiments share: the base model, the splits, calibration batches.

``base`` names the model to quantize: ``"spiral-book"`` (the book's model, stage 14) or any
name or folder :func:`spiral.models.pretrained.load_pretrained` accepts; ``"standin"``
trains :func:`~spiral.models.pretrained.train_tiny_standin` (``standin_steps`` steps, in a
temporary folder, cached per process) so that quick variants need no committed model.
Every method starts from a fresh load of the same weights. Validation nats come from the
shared evaluator (:func:`spiral.evaluate.evaluate`) on the validation split, optionally
its first ``val_tokens`` tokens; calibration windows are drawn from the training split.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from spiral.evaluate import evaluate
from spiral.nn.layers import Linear
from spiral.nn.module import Module
from spiral.quant.gptq import _record

_TMP = tempfile.TemporaryDirectory(prefix="spiral-quant-")


@lru_cache(maxsize=4)
def _folder(base: str, standin_steps: int) -> str:
    if base != "standin":
        return base
    from spiral.models.pretrained import train_tiny_standin

    folder = Path(_TMP.name) / f"standin-{standin_steps}"
    train_tiny_standin(folder, seed=0, steps=standin_steps)
    return str(folder)


def load(base: str, standin_steps: int = 200) -> Any:
    """A fresh :class:`~spiral.models.pretrained.Pretrained` (model in eval mode)."""
    from spiral.models.pretrained import load_pretrained

    return load_pretrained(_folder(base, standin_steps))


@lru_cache(maxsize=2)
def split_ids(split: str) -> np.ndarray:
    from spiral.data import get_splits
    from spiral.tokenizers import ByteTokenizer

    text = getattr(get_splits("shakespeare"), split)
    return np.array(ByteTokenizer().encode(text), dtype=np.int64)


def val_nats(model: Any, val_tokens: int = 0) -> float:
    ids = split_ids("val")
    return evaluate(model, ids[:val_tokens] if val_tokens else ids).nats


def calibration(n: int, T: int, seed: int, split: str = "train") -> np.ndarray:
    """n random windows of T tokens from a split (the seed picks them)."""
    ids = split_ids(split)
    starts = np.random.default_rng(seed).integers(0, len(ids) - T, n)
    return np.stack([ids[s:s + T] for s in starts])


def linear_names(model: Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, Linear) and n]


def layer_inputs(model: Module, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs (tokens, in) of every Linear of the float model on the windows ``ids``."""
    mods = dict(model.named_modules())
    return _record(model, {n: mods[n] for n in linear_names(model)}, ids)  # type: ignore[misc]


def fmt(s: dict[str, Any], digits: int = 4) -> str:
    """'mean ± sd' for several runs; one run is labelled as one."""
    if s["n"] > 1:
        return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"
    return f"{s['mean']:.{digits}f} (one run)"
