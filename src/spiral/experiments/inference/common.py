"""Shared pieces of stage 17's experiments: the base model, a same-shape random model, load.

``base`` names the model the full variants measure (``"spiral-book"``, the book's pretrained
model, or any pretrained folder); ``"standin"`` trains the tiny stand-in in a temporary
folder in seconds (the quick variants). Speed and memory do not depend on the weights'
values, so those experiments build a random model of the base's shape (with a longer
context where the experiment sweeps lengths). Chapter: stage 17.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from spiral.models.gpt import GPT, GPTConfig
from spiral.models.pretrained import STANDIN, Pretrained, load_pretrained, train_tiny_standin


def load_base(base: str, seed: int = 0, steps: int = 60) -> Pretrained:
    """The pretrained base model, or a freshly trained stand-in for ``base="standin"``."""
    if base == "standin":
        folder = Path(tempfile.mkdtemp(prefix="spiral-s17-")) / "standin"
        return train_tiny_standin(folder, seed=seed, steps=steps)
    return load_pretrained(base)


def base_config(base: str) -> GPTConfig:
    if base == "standin":
        return GPTConfig(vocab_size=256, **STANDIN)  # type: ignore[arg-type]
    return load_pretrained(base).config


def random_model(config: GPTConfig, seed: int = 0, **overrides: Any) -> GPT:
    """A model of the config's shape (with overrides) and random weights, in eval mode."""
    m = GPT(replace(config, **overrides), rng=np.random.default_rng(seed))
    m.eval()
    return m


def load_average() -> list[float]:
    """The machine's 1-, 5- and 15-minute load averages: timings on a shared machine are
    labelled with them."""
    return [float(x) for x in os.getloadavg()]
