"""Var(q·k) against the dimension d, with and without the 1/√d scale.

For q, k with independent zero-mean components of variances σ_q², σ_k²,

    Var(q·k) = Σ_i Var(q_i k_i) = Σ_i E[q_i²] E[k_i²] = d σ_q² σ_k²,

so unit-variance inputs give Var(q·k) = d and Var(q·k/√d) = 1. We draw the vectors and
measure both, for d from 2 to 1024, and once more for σ_q = 0.5, σ_k = 2 (product 1, so the
same line) and σ_q = σ_k = 2 (16× higher: the scale fixes d, not the inputs' own variance).
Chapter: stage 7 ("Why divide by √d").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    dims: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    n_pairs: int = 50_000
    chunk: int = 5_000


def _dot_var(rng: np.random.Generator, d: int, n: int, chunk: int, sq: float, sk: float
             ) -> float:
    dots = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        q = sq * rng.standard_normal((m, d))
        k = sk * rng.standard_normal((m, d))
        dots.append(np.einsum("nd,nd->n", q, k))
    return float(np.concatenate(dots).var())


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # a waiting 2nd BLAS thread is slower
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    rows, unscaled, scaled, mixed, big = [], [], [], [], []
    for d in config.dims:
        v = _dot_var(rng, d, config.n_pairs, config.chunk, 1.0, 1.0)
        vm = _dot_var(rng, d, config.n_pairs, config.chunk, 0.5, 2.0)
        vb = _dot_var(rng, d, config.n_pairs, config.chunk, 2.0, 2.0)
        unscaled.append(v)
        scaled.append(v / d)
        mixed.append(vm / d)
        big.append(vb / d)
        rows.append([d, f"{v:.2f}", f"{v / d:.3f}", f"{np.sqrt(v):.2f}", f"{vb / d:.2f}"])
    rel = [abs(u / d - 1.0) for u, d in zip(unscaled, config.dims, strict=True)]
    return {"dims": list(config.dims), "var_unscaled": unscaled, "var_scaled": scaled,
            "var_scaled_sigma_half_two": mixed, "var_scaled_sigma_two": big,
            "max_rel_error": max(rel), "n_pairs": config.n_pairs,
            "var_unscaled_at_max_d": unscaled[-1],
            "sd_unscaled_at_max_d": float(np.sqrt(unscaled[-1])),
            "var_scaled_at_max_d": scaled[-1], "max_d": config.dims[-1],
            "table": {"columns": ["d", "Var(q·k)", "Var(q·k/√d)", "sd of q·k (unscaled)",
                                  "Var(q·k/√d) with σ_q = σ_k = 2"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.4)
    d = results["dims"]
    ax.plot(d, d, color="#999999", lw=1.0, ls=":")
    direct_label(ax, d, d, "prediction d", color="#777777", dy=8)
    ax.plot(d, results["var_unscaled"], marker="o", ms=3, color=PALETTE[1], lw=0)
    direct_label(ax, d, results["var_unscaled"], "q·k", color=PALETTE[1], dy=-8)
    ax.plot(d, results["var_scaled"], marker="o", ms=3, color=PALETTE[0])
    direct_label(ax, d, results["var_scaled"], "q·k / √d", color=PALETTE[0])
    ax.plot(d, results["var_scaled_sigma_two"], marker="o", ms=3, color=PALETTE[3])
    direct_label(ax, d, results["var_scaled_sigma_two"], "q·k / √d, σ = 2", color=PALETTE[3])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlim(min(d) * 0.8, max(d) * 8)
    ax.set_xlabel("dimension d")
    ax.set_ylabel("variance of the logit")
    return {"dot_variance": fig}


def check(results: dict[str, Any]) -> None:
    # Var(q·k) = d within sampling error; the scale gives 1 at every d
    assert results["max_rel_error"] < 0.05, results["max_rel_error"]
    assert all(abs(v - 1.0) < 0.05 for v in results["var_scaled"])
    assert all(abs(v - 1.0) < 0.05 for v in results["var_scaled_sigma_half_two"])
    assert all(abs(v - 16.0) < 0.8 for v in results["var_scaled_sigma_two"])


EXPERIMENT = Experiment(
    name="attention_dot_variance", stage=7, title="Var(q·k) against d",
    quick=Config(dims=(4, 64, 256), n_pairs=20_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("max |Var/d − 1|", r["max_rel_error"]),
                       (f"Var(q·k) at d={r['max_d']}", r["var_unscaled_at_max_d"])],
)
