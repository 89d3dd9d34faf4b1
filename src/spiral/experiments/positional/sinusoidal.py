"""The sinusoidal encoding matrix, its wavelengths, and its shift-as-rotation property.

PE(pos, 2i) = sin(pos·ω_i), PE(pos, 2i+1) = cos(pos·ω_i), ω_i = 10000^(-2i/d) (Vaswani et
al., 2017). We draw the (positions × dimensions) matrix as a heatmap, list the wavelength
2π/ω_i of each pair (a geometric sequence from 2π to just under 2π·10000), measure how far
PE(pos + k) is from M_k PE(pos) over many positions and shifts (the chapter proves it is
zero), and measure the dot product PE(p)·PE(p + k) as a function of k alone.
Chapter: stage 9 ("Sinusoidal encodings").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.nn.positional import sinusoidal_shift_matrix, sinusoidal_table, wavelengths
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    n_positions: int = 256
    d_model: int = 64
    base: float = 10000.0
    shifts: tuple[int, ...] = (1, 3, 17, 100, 1000)
    max_offset: int = 128       # for the dot-product curve
    check_positions: int = 4096


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    d, base = config.d_model, config.base
    pe = sinusoidal_table(config.n_positions, d, base)
    lam = wavelengths(d, base)
    big = sinusoidal_table(config.check_positions + max(config.shifts), d, base)
    n = config.check_positions
    shift_err = {}
    for k in config.shifts:
        m = sinusoidal_shift_matrix(k, d, base)
        shift_err[str(k)] = float(np.abs(big[:n] @ m.T - big[k:n + k]).max())
    # PE(p)·PE(p + k): the same for every p (sum of cos(k ω_i)); spread over p measured
    ks = np.arange(config.max_offset + 1)
    dots = np.stack([np.einsum("pd,pd->p", big[: n - config.max_offset],
                               big[k: n - config.max_offset + k]) for k in ks])  # (K+1, P)
    table_rows = [[i, f"{2 * i}, {2 * i + 1}", f"{lam[i]:,.1f}"]
                  for i in sorted({0, 1, 2, 4, 8, d // 4, d // 2 - 1}) if i < d // 2]
    return {"pe": np.round(pe, 3).tolist(),  # rounded for the heatmap only
            "wavelengths": lam.tolist(), "d_model": d,
            "min_wavelength": float(lam[0]), "max_wavelength": float(lam[-1]),
            "wavelength_ratio": float(lam[1] / lam[0]),
            "shift_max_error": shift_err, "shift_max_error_all": max(shift_err.values()),
            "dot_by_offset": dots.mean(1).tolist(),
            "dot_spread_over_positions": float((dots.max(1) - dots.min(1)).max()),
            "dot_at_0": float(dots[0, 0]),
            "wavelength_table": {"columns": ["pair i", "dimensions", "wavelength (positions)"],
                                 "rows": table_rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    pe = np.asarray(results["pe"])
    fig, ax = new_figure(width=6.4, height=3.6)
    im = ax.imshow(pe, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("dimension (even = sin, odd = cos)")
    ax.set_ylabel("position")
    fig.colorbar(im, ax=ax, shrink=0.8, label="PE(pos, dim)")
    fig2, axes = new_figure(1, 2, width=7.4, height=3.2)
    lam = results["wavelengths"]
    axes[0].plot(range(len(lam)), lam, marker="o", ms=2.5, color=PALETTE[0], lw=1.0)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("pair index i (dimensions 2i, 2i+1)")
    axes[0].set_ylabel("wavelength 2π/ω_i (positions)")
    dots = results["dot_by_offset"]
    axes[1].plot(range(len(dots)), dots, color=PALETTE[1], lw=1.2)
    direct_label(axes[1], list(range(len(dots))), dots, "PE(p)·PE(p+k)", color=PALETTE[1])
    axes[1].set_xlabel("offset k")
    axes[1].set_ylabel("dot product (same for every p)")
    return {"encoding_matrix": fig, "wavelengths": fig2}


def check(results: dict[str, Any]) -> None:
    assert results["shift_max_error_all"] < 1e-9           # PE(pos + k) = M_k PE(pos)
    assert results["dot_spread_over_positions"] < 1e-9     # depends on k only
    assert abs(results["dot_at_0"] - results["d_model"] / 2) < 1e-9  # Σ sin² + cos² = d/2
    lam = np.asarray(results["wavelengths"])
    assert np.allclose(lam[1:] / lam[:-1], results["wavelength_ratio"])
    assert abs(lam[0] - 2 * np.pi) < 1e-12 and lam[-1] < 2 * np.pi * 10000


EXPERIMENT = Experiment(
    name="positional_sinusoidal", stage=9, title="Sinusoidal encodings",
    quick=Config(n_positions=64, d_model=16, check_positions=512, max_offset=32),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("max shift error", f"{r['shift_max_error_all']:.1e}"),
                       ("wavelengths", f"{r['min_wavelength']:.2f} .. {r['max_wavelength']:,.0f}")],
)
