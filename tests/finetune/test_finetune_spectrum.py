"""Effective rank and energy rank of ΔW: exact on matrices whose spectrum we build."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.finetune.spectrum import (
    delta_spectra,
    effective_rank,
    energy_rank,
    random_erank,
    singular_values,
)
from spiral.models import GPT, GPTConfig

pytestmark = pytest.mark.stage15


def matrix_with(sigma: list[float], shape: tuple[int, int] = (12, 9)) -> np.ndarray:
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], shape[1])))
    s = np.zeros(shape)
    s[np.arange(len(sigma)), np.arange(len(sigma))] = sigma
    return u @ s @ v.T


def test_ranks_of_known_spectra() -> None:
    s = singular_values(matrix_with([3.0]))
    assert effective_rank(s) == pytest.approx(1.0, abs=1e-9) and energy_rank(s) == 1
    s = singular_values(matrix_with([1.0] * 4))
    assert effective_rank(s) == pytest.approx(4.0, rel=1e-9) and energy_rank(s) == 4
    s = singular_values(matrix_with([2.0, 1.0]))  # energy 4/5 in the first: k = 2 for 90 %
    p = np.array([2, 1]) / 3
    assert effective_rank(s) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert energy_rank(s, 0.9) == 2 and energy_rank(s, 0.8) == 1
    assert effective_rank(np.zeros(3)) == 0.0
    assert 0.5 * 9 < random_erank((12, 9)) <= 9
    with pytest.raises(ValueError, match="energy"):
        energy_rank(s, 0.0)


def test_delta_spectra_sees_a_rank_one_update_per_matrix() -> None:
    cfg = GPTConfig(vocab_size=11, context_length=8, n_layers=1, n_heads=2, d_model=16)
    base, tuned = GPT(cfg, rng=np.random.default_rng(0)), GPT(cfg, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _, p in tuned.named_parameters():
        if p.data.ndim == 2:
            p.data += np.outer(rng.standard_normal(p.shape[0]), rng.standard_normal(p.shape[1]))
    spectra = delta_spectra(base, tuned)
    assert set(spectra) == {n for n, p in base.named_parameters() if p.data.ndim == 2}
    for v in spectra.values():
        assert v["energy_rank_90"] == 1 and v["erank"] < 1.0 + 1e-4  # float32 weights
