"""Perplexity is compression: a language model's bits per character next to gzip, bz2, lzma.

An arithmetic coder driven by a model spends -log2 P(x_t | context) bits on each character
(within 2 bits for the whole text), so cross-entropy in bits/char *is* a compression rate.
We compare our best n-gram model (Kneser–Ney, order and discount chosen on the tune split)
with general-purpose compressors on the same validation text, both cold (compressing the
validation text alone) and primed with the training text (size of train + val compressed,
minus size of train compressed) — the fair comparison, since the model has read the
training text. Chapter: stages/stage-01-ngrams ("Perplexity, bits and compression").
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.ngram import corpora as nc
from spiral.ngram import NGramLM
from spiral.plotting import PALETTE, new_figure

COMPRESSORS = {
    "gzip -9": lambda b: len(gzip.compress(b, compresslevel=9, mtime=0)),
    "bz2 -9": lambda b: len(bz2.compress(b, compresslevel=9)),
    "lzma -9e": lambda b: len(lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
}


@dataclass(frozen=True)
class Config:
    corpora: tuple[str, ...] = ("shakespeare", "names")
    orders: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    d_grid: tuple[float, ...] = nc.D_GRID
    seeds: tuple[int, ...] = (42, 0, 1)
    primed: bool = True


def _as_text(x: Any) -> str:
    return x if isinstance(x, str) else "".join(n + "\n" for n in x)


def _one(c: nc.Corpus, config: Config) -> dict[str, Any]:
    best = (math.inf, 0, 0.0)
    for n in config.orders:  # order and discount chosen on the tune split
        d, curve = nc.tune(NGramLM(n).fit(c.fit), c.tune, "kneser_ney", config.d_grid)
        best = min(best, (min(curve), n, d))
    _, n, d = best
    lm = NGramLM(n, "kneser_ney", discount=d).fit(c.train)
    out: dict[str, Any] = {"order": n, "discount": d,
                           "model_bits": lm.cross_entropy(c.val) / math.log(2),
                           "bigram_bits": NGramLM(2, "kneser_ney").fit(c.train)
                           .cross_entropy(c.val) / math.log(2)}
    val = _as_text(c.val).encode("utf-8")
    train = _as_text(c.train).encode("utf-8")
    n_chars = len(_as_text(c.val))  # == the number of scored tokens (names: + end markers)
    out["n_chars"] = n_chars
    out["uniform_bits"] = math.log2(lm.vocab_size)
    for name, size in COMPRESSORS.items():
        out[f"{name} cold"] = 8 * size(val) / n_chars
        if config.primed:
            out[f"{name} primed"] = 8 * (size(train + val) - size(train)) / n_chars
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for corpus in config.corpora:
        runs = [_one(nc.load(corpus, s), config) for s in nc.seeds_for(corpus, config.seeds)]
        keys = [k for k in runs[0] if k not in ("order", "discount", "n_chars")]
        r: dict[str, Any] = {k: mean_sd([x[k] for x in runs]) for k in keys}
        r["order"] = [x["order"] for x in runs]
        r["discount"] = [x["discount"] for x in runs]
        r["deterministic"] = corpus != "names"
        rows = [[f"Kneser–Ney, order {r['order'][0]}", f"{r['model_bits']['mean']:.3f}"],
                ["Kneser–Ney, order 2", f"{r['bigram_bits']['mean']:.3f}"]]
        rows += [[k, f"{r[k]['mean']:.3f}"] for k in keys if k.split()[0] in
                 ("gzip", "bz2", "lzma")]
        rows.append(["uniform over the vocabulary (log2 |V|)", f"{r['uniform_bits']['mean']:.3f}"])
        rows.append(["raw text (8-bit bytes)", "8.000"])
        r["table"] = {"columns": ["coder", "bits per character"], "rows": rows}
        res[corpus] = r
    return res


def plot(results: dict[str, Any]) -> dict[str, Any]:
    corpora = [c for c in ("shakespeare", "names") if c in results]
    fig, axes = new_figure(1, len(corpora), width=4.4 * len(corpora), height=3.2)
    axes = np.atleast_1d(axes)
    for ax, corpus in zip(axes, corpora):
        rows = results[corpus]["table"]["rows"][:-1]
        labels = [r[0] for r in rows][::-1]
        vals = [float(r[1]) for r in rows][::-1]
        colors = [PALETTE[1] if lab.startswith("Kneser") else PALETTE[0] for lab in labels]
        ax.barh(range(len(vals)), vals, color=colors)
        ax.set_yticks(range(len(vals)), labels, fontsize=7)
        for i, v in enumerate(vals):
            ax.text(v + 0.05, i, f"{v:.2f}", va="center", fontsize=7)
        ax.set_xlabel("bits per character on validation (lower is better)")
        ax.set_title(corpus, loc="left")
    return {"bits_per_char": fig}


def check(results: dict[str, Any]) -> None:
    for corpus in (c for c in ("shakespeare", "names") if c in results):
        r = results[corpus]
        best_compressor = min(v["mean"] for k, v in r.items()
                              if isinstance(v, dict) and k.split()[0] in ("gzip", "bz2", "lzma"))
        assert r["model_bits"]["mean"] < best_compressor, "the n-gram model out-compresses"
        assert r["model_bits"]["mean"] < r["uniform_bits"]["mean"]


EXPERIMENT = Experiment(
    name="compression_bits_per_char",
    stage=1,
    title="Bits per character: language models are compressors",
    quick=Config(corpora=("names",), orders=(3, 4), d_grid=(0.75,), seeds=(42,), primed=False),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [(f"{c} model bits/char", f"{r[c]['model_bits']['mean']:.3f}")
                       for c in ("shakespeare", "names") if c in r],
)
