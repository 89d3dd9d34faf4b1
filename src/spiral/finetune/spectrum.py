"""Is the update of full fine-tuning low-rank? Singular values and effective rank of ΔW.

LoRA assumes the change a fine-tune makes to each matrix, ΔW = W_tuned − W_base, has a low
"intrinsic rank" (Hu et al., 2021; Aghajanyan et al., 2021). We measure it on the real ΔW of
full fine-tuning with two numbers per matrix, from its singular values σ₁ ≥ σ₂ ≥ … ≥ 0:

    effective rank (Roy & Vetterli, 2007)  erank = exp(−Σ pᵢ log pᵢ),  pᵢ = σᵢ / Σⱼ σⱼ
    energy rank                            the smallest k with Σᵢ≤ₖ σᵢ² ≥ 0.9 · Σᵢ σᵢ²

erank is 1 for a rank-1 matrix and min(m, n) for one with equal singular values; the energy
rank is the rank a truncated SVD (the best rank-k approximation, Eckart–Young) needs to keep
90 % of ‖ΔW‖_F². For comparison, ``random_erank`` gives the effective rank of a Gaussian
matrix of the same shape, the spectrum of an update with no structure at all.
Chapter: stage 15 (fine-tuning).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def singular_values(delta: np.ndarray) -> np.ndarray:
    """σ of a matrix, descending, in float64."""
    return np.linalg.svd(np.asarray(delta, dtype=np.float64), compute_uv=False)


def effective_rank(s: np.ndarray) -> float:
    """exp of the entropy of σ / Σσ (Roy & Vetterli, 2007); 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def energy_rank(s: np.ndarray, energy: float = 0.9) -> int:
    """Smallest k whose top-k singular values hold ``energy`` of Σσ² (‖ΔW‖_F²)."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    e = np.cumsum(np.asarray(s, dtype=np.float64) ** 2)
    if e[-1] <= 0:
        return 0
    return int(np.searchsorted(e, energy * e[-1] * (1 - 1e-12)) + 1)


def random_erank(shape: tuple[int, int], seed: int = 0) -> float:
    """Effective rank of an i.i.d. Gaussian matrix of ``shape``: no low-rank structure."""
    g = np.random.default_rng(seed).standard_normal(shape)
    return effective_rank(singular_values(g))


def delta_spectra(base: Any, tuned: Any, min_dim: int = 2) -> dict[str, dict[str, Any]]:
    """Per 2-D weight of the tuned model (same names as the base): σ(ΔW) and its ranks."""
    before = {n: p.data for n, p in base.named_parameters()}
    out: dict[str, dict[str, Any]] = {}
    for name, p in tuned.named_parameters():
        if p.data.ndim != 2 or min(p.data.shape) < min_dim or name not in before:
            continue
        s = singular_values(p.data - before[name])
        out[name] = {"shape": list(p.data.shape), "sigma": s.tolist(),
                     "erank": effective_rank(s), "energy_rank_90": energy_rank(s, 0.9),
                     "relative_norm": float(np.linalg.norm(p.data - before[name]))
                     / max(float(np.linalg.norm(before[name])), 1e-30)}
    return out
