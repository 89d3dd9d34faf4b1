"""The real ΔW of full fine-tuning: singular values per matrix, effective and energy rank.

Full fine-tuning on names (seed 0, the rate chosen in ``finetune_methods``) moves every matrix
of the base; ΔW = W_tuned − W_base is decomposed by SVD. Per matrix: the effective rank
(Roy & Vetterli), the rank that keeps 90 % of ‖ΔW‖²_F, the share of ‖ΔW‖²_F in the top r = 8
directions (the most a rank-8 LoRA update could express), and the effective rank of a Gaussian
matrix of the same shape for scale. Chapter: stage 15, "Is the update low-rank?".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.finetune.common import (
    QUICK_RUN,
    STANDIN,
    RunConfig,
    fresh_base,
    run_one,
)
from spiral.experiments.framework import Experiment
from spiral.finetune.recipe import FinetuneConfig
from spiral.finetune.spectrum import delta_spectra, random_erank
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    run: RunConfig = RunConfig()
    lr: float = 1e-3   # full fine-tuning's rate as chosen in finetune_methods
    seed: int = 0
    top: int = 8       # the LoRA rank whose share of ‖ΔW‖² is reported


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    base = fresh_base(config.base).model
    tuned = run_one(config.base, FinetuneConfig("full"), config.lr, config.seed, config.run)
    spectra = delta_spectra(base, tuned["model"])
    for v in spectra.values():
        s2 = np.square(v["sigma"])
        v["energy_top"] = float(s2[:config.top].sum() / s2.sum())
        v["random_erank"] = random_erank((v["shape"][0], v["shape"][1]))
        v["full_rank"] = min(v["shape"])
    names = list(spectra)
    out: dict[str, Any] = {"matrices": spectra, "val_after": tuned["val"], "top": config.top,
                           # spreads over the matrices of one run (not over seeds)
                           "erank_fraction": _spread([spectra[n]["erank"]
                                                      / spectra[n]["random_erank"]
                                                      for n in names]),
                           "energy_top": _spread([spectra[n]["energy_top"] for n in names]),
                           "energy_rank_90": _spread([spectra[n]["energy_rank_90"]
                                                      for n in names])}
    out["table"] = {"columns": ["matrix", "shape", "effective rank", "Gaussian of that shape",
                                "rank for 90 % of ‖ΔW‖²", f"share in top {config.top}",
                                "‖ΔW‖ / ‖W‖"],
                    "rows": [[n, "×".join(map(str, v["shape"])), f"{v['erank']:.1f}",
                              f"{v['random_erank']:.1f}", v["energy_rank_90"],
                              f"{100 * v['energy_top']:.0f} %", f"{v['relative_norm']:.3f}"]
                             for n, v in spectra.items()]}
    return out


def _spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "median": float(np.median(v)), "n_matrices": int(v.size)}


def _kind(name: str) -> str:
    parts = name.split(".")
    return parts[-2] if len(parts) > 2 else parts[0]


def plot(results: dict[str, Any]) -> dict[str, Any]:
    m = results["matrices"]
    kinds = sorted({_kind(n) for n in m}, key=lambda k: list(map(_kind, m)).index(k))
    fig, axes = new_figure(width=7.0, height=1.9 * ((len(kinds) + 2) // 3), ncols=3,
                           nrows=(len(kinds) + 2) // 3)
    flat = np.atleast_1d(axes).ravel()
    for ax, kind in zip(flat, kinds):
        group = [(n, v) for n, v in m.items() if _kind(n) == kind]
        for i, (n, v) in enumerate(group):
            s = np.asarray(v["sigma"])
            ax.semilogy(np.arange(1, s.size + 1), s / s[0], color=PALETTE[i % len(PALETTE)],
                        lw=1, label=n.split(".")[1] if n.startswith("blocks") else n)
        ax.axvline(results["top"], color="0.5", ls=":", lw=0.8)
        ax.set_title(kind, fontsize=8)
        ax.set_xlabel("index i", fontsize=7)
        ax.set_ylabel("σᵢ / σ₁", fontsize=7)
    for ax in flat[len(kinds):]:
        ax.set_visible(False)
    sizes = [sum(_kind(n) == k for n in m) for k in kinds]
    if sizes and max(sizes) > 1:  # one legend of block numbers, on a panel with every block
        flat[sizes.index(max(sizes))].legend(fontsize=6, frameon=False, title="block",
                                             title_fontsize=6, ncol=2)
    return {"finetune_delta_spectra": fig}


def check(results: dict[str, Any]) -> None:
    for n, v in results["matrices"].items():
        assert 1.0 <= v["erank"] <= v["full_rank"] + 1e-9, n
        assert 1 <= v["energy_rank_90"] <= v["full_rank"], n
        s = np.asarray(v["sigma"])
        assert np.all(np.diff(s) <= 1e-12), n
        assert v["relative_norm"] > 0, n  # full fine-tuning moved every matrix
    # the claim: ΔW has structure, a lower effective rank than a Gaussian matrix of its shape
    assert results["erank_fraction"]["median"] < 1.0, results["erank_fraction"]


EXPERIMENT = Experiment(
    name="finetune_spectrum", stage=15, title="Singular values of full fine-tuning's ΔW",
    quick=replace(Config(), base=STANDIN, run=QUICK_RUN, lr=3e-3),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("ΔW effective rank / Gaussian's", r["erank_fraction"]["mean"]),
                       (f"share of ‖ΔW‖² in top {r['top']}", r["energy_top"]["mean"])],
)
