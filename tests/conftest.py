"""Shared test setup: offline corpora, headless plotting, a fresh generator per test."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
if "SPIRAL_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["SPIRAL_DATA_DIR"] = str(SHARED_DATA)


def corpora_available() -> bool:
    from spiral import data

    try:
        data.resolve("shakespeare", download=False)
        data.resolve("names", download=False)
    except data.DataError:
        return False
    return True


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Torch, when a test uses it as the oracle, runs on one thread: on a shared two-core
    machine a second thread mostly waits for a busy core on these tiny ops."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
