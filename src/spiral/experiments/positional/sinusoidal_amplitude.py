"""Why the sinusoidal model of the extrapolation study failed to train: the table's scale.

The sinusoid table has entries in [-1, 1] (rms 1/√2 per dimension), while a GPT-2-style
token embedding starts at N(0, 0.02). Added together, position outweighs content about
35 to 1 at initialization. The 2017 transformer did not have this problem because it
multiplied its embeddings by √d_model. We rerun the study's sinusoidal model with the
table scaled by ``amplitude`` — ``0.02·√2`` makes position and content equally large at
initialization — with everything else as in :mod:`positional_extrapolation` (same sizes,
recipe, batches, seeds and evaluator). Chapter: stage 9 ("The extrapolation study").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.positional.extrapolation import (
    Config as StudyConfig,
)
from spiral.experiments.positional.extrapolation import (
    _data,
    position_profile,
    score_at,
    train_one,
)
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    amplitudes: tuple[float, ...] = (0.25, 0.02 * math.sqrt(2))
    study: StudyConfig = field(default_factory=StudyConfig)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config.study
    _, _, val_ids = _data()
    val = val_ids[: c.val_tokens]
    lengths = [f * c.context_length for f in c.factors]
    out: dict[str, Any] = {}
    rows = []
    for i, a in enumerate(config.amplitudes):
        nats, profiles = [], []
        for seed in c.seeds:
            model, _ = train_one(c, "sinusoidal", seed, sinusoidal_amplitude=a)
            nats.append([score_at(model, val, L) for L in lengths])
            profiles.append(position_profile(model, val, lengths[-1], c.profile_windows))
        key = f"a{i}"  # no dots: the chapter's macros address results by dotted paths
        by_f = {f"x{f}": mean_sd([n[j] for n in nats]) for j, f in enumerate(c.factors)}
        prof = np.mean(profiles, axis=0)
        T = c.context_length
        out[key] = {"amplitude": a, "nats": by_f, "profile": prof.tolist(),
                    "inside": float(prof[:T].mean()), "beyond": float(prof[T:].mean())}
        rows.append([f"{a:.4g}"] + [f"{v['mean']:.3f} ± {v['sd']:.3f}" for v in by_f.values()])
    return {"by_amplitude": out, "lengths": lengths, "factors": list(c.factors),
            "context_length": c.context_length, "uniform_nats": float(np.log(65)),
            "table": {"columns": ["amplitude"] + [f"{f}× ({L} tokens)"
                                                  for f, L in zip(c.factors, lengths)],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=6.4, height=3.4)
    T = results["context_length"]
    width = max(1, T // 8)
    for i, r in enumerate(results["by_amplitude"].values()):
        prof = np.asarray(r["profile"])
        n = len(prof) // width
        binned = prof[: n * width].reshape(n, width).mean(1)
        x = (np.arange(n) + 0.5) * width + 1
        ax.plot(x, binned, color=PALETTE[i], lw=1.2, marker="o", ms=2)
        direct_label(ax, list(x), list(binned), f"amplitude {r['amplitude']:.3g}",
                     color=PALETTE[i])
    ax.axvline(T, color="#999999", lw=0.8, ls=":")
    ax.set_xlabel(f"position inside the window (bins of {width}; trained up to the dotted line)")
    ax.set_ylabel("mean NLL at those positions (nats)")
    return {"loss_by_position": fig}


def check(results: dict[str, Any]) -> None:
    for key, r in results["by_amplitude"].items():
        assert all(np.isfinite(v["mean"]) for v in r["nats"].values()), key
        assert r["nats"]["x1"]["mean"] < results["uniform_nats"], key


EXPERIMENT = Experiment(
    name="positional_sinusoidal_amplitude", stage=9, title="Sinusoid amplitude vs embedding scale",
    quick=Config(amplitudes=(0.0283,), study=StudyConfig(
        seeds=(0,), n_layers=1, d_model=32, context_length=16, factors=(1, 2), max_steps=40,
        batch_size=8, val_tokens=2048, profile_windows=8)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"amplitude {r2['amplitude']:.3g} {f}", round(v["mean"], 3))
                       for r2 in r["by_amplitude"].values() for f, v in r2["nats"].items()],
)
