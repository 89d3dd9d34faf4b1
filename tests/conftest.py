"""Shared test setup: offline corpora, headless plotting, a fresh generator per test."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hypothesis import settings

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
# The suite needs nothing outside the repository: both corpora ship as test fixtures (the
# registry still verifies their SHA-256, exactly as it does a download).
FIXTURE_DATA = ROOT / "tests" / "fixtures" / "data"
if "SPIRAL_DATA_DIR" not in os.environ:
    os.environ["SPIRAL_DATA_DIR"] = str(FIXTURE_DATA)

# Property tests: random exploration on a developer's machine, a fixed derandomized search in
# CI (CI=true), so a landing never depends on luck; failures print a reproduction blob.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE",
                                                                       "dev"))


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
