"""The bigram transition matrix, and the state-space explosion of higher orders.

The 27 x 27 matrix of character-pair counts on the names training split (row = previous
character, column = next; ``.`` marks a name's start or end), and for each order n the
number of possible contexts |V|^(n-1) against the contexts the training text actually
contains, with the fraction of validation n-grams (and contexts) never seen in training —
the events an unsmoothed model must give probability zero.
Chapter: stages/stage-01-ngrams ("The state space explodes").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.ngram import corpora as nc
from spiral.ngram import NGramLM
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    corpora: tuple[str, ...] = ("shakespeare", "names")
    orders: tuple[int, ...] = tuple(range(1, 11))
    seeds: tuple[int, ...] = (42, 0, 1)


def _sparsity(c: nc.Corpus, orders: tuple[int, ...]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in (
        "possible_contexts", "seen_contexts", "possible_ngrams", "seen_ngrams",
        "val_unseen_ngram_fraction", "val_unseen_context_fraction")}
    for n in orders:
        lm = NGramLM(n).fit(c.train)
        V = lm.vocab_size
        table = lm.raw[-1]
        ngram_counts, ctx_counts = lm.event_counts(c.val)
        out["possible_contexts"].append(float(V) ** (n - 1))
        out["seen_contexts"].append(table.n_contexts)
        out["possible_ngrams"].append(float(V) ** n)
        out["seen_ngrams"].append(table.n_types)
        out["val_unseen_ngram_fraction"].append(float(np.mean(ngram_counts == 0)))
        out["val_unseen_context_fraction"].append(float(np.mean(ctx_counts == 0)))
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    res: dict[str, Any] = {"orders": list(config.orders)}
    c = nc.load("names", config.seeds[0])
    lm = NGramLM(2).fit(c.train)
    V = lm.vocab_size
    counts = np.zeros((V, V), dtype=np.int64)  # (prev, next)
    t = lm.raw[1]
    counts[t.codes // V, t.codes % V] = t.counts
    labels = ["." if ch == "\n" else ch for ch in lm.vocab]
    res["bigram"] = {"labels": labels, "counts": counts.tolist(),
                     "zero_fraction": float(np.mean(counts == 0)), "vocab_size": V}
    for corpus in config.corpora:
        runs = [_sparsity(nc.load(corpus, s), config.orders)
                for s in nc.seeds_for(corpus, config.seeds)]
        r: dict[str, Any] = {k: np.mean([x[k] for x in runs], axis=0).tolist() for k in runs[0]}
        r["deterministic"] = corpus != "names"
        for i, n in enumerate(config.orders):
            r[f"unseen_at_{n}"] = mean_sd([x["val_unseen_ngram_fraction"][i] for x in runs])
        unseen = r["val_unseen_ngram_fraction"]
        r["first_order_half_unseen"] = next(
            (n for n, f in zip(config.orders, unseen) if f >= 0.5), None)
        r["table"] = {
            "columns": ["order", "possible contexts", "contexts seen", "fraction seen",
                        "val n-grams unseen", "val contexts unseen"],
            "rows": [[n, f"{r['possible_contexts'][i]:.3g}", int(round(r["seen_contexts"][i])),
                      f"{r['seen_contexts'][i] / r['possible_contexts'][i]:.2g}",
                      f"{unseen[i]:.1%}", f"{r['val_unseen_context_fraction'][i]:.1%}"]
                     for i, n in enumerate(config.orders)],
        }
        res[corpus] = r
    return res


def plot(results: dict[str, Any]) -> dict[str, Any]:
    b = results["bigram"]
    counts = np.array(b["counts"])
    fig, ax = new_figure(width=6.2, height=5.6)
    im = ax.imshow(np.log10(counts + 1), cmap="Blues")
    ax.set_xticks(range(len(b["labels"])), b["labels"], fontsize=7)
    ax.set_yticks(range(len(b["labels"])), b["labels"], fontsize=7)
    ax.set_xlabel("next character")
    ax.set_ylabel("previous character")
    ax.set_title("bigram counts on the names training split (log10(count + 1))", loc="left")
    fig.colorbar(im, ax=ax, shrink=0.7)
    figs = {"transition_matrix": fig}

    corpora = [c for c in ("shakespeare", "names") if c in results]
    fig2, axes = new_figure(1, 2, width=8.4, height=3.4)
    orders = results["orders"]
    for color, corpus in zip(PALETTE, corpora):
        r = results[corpus]
        axes[0].plot(orders, r["possible_contexts"], ls="--", color=color, lw=1.0)
        axes[0].plot(orders, r["seen_contexts"], color=color, marker="o", ms=3)
        direct_label(axes[0], orders, r["seen_contexts"], f"{corpus}: seen", color=color)
        direct_label(axes[0], orders[:6], r["possible_contexts"][:6], f"{corpus}: |V|^(n−1)",
                     color=color)
        axes[1].plot(orders, r["val_unseen_ngram_fraction"], color=color, marker="o", ms=3)
        direct_label(axes[1], orders, r["val_unseen_ngram_fraction"], corpus, color=color)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("order n")
    axes[0].set_ylabel("number of contexts")
    axes[0].set_title("possible (dashed) vs seen (solid) contexts", loc="left")
    axes[1].set_xlabel("order n")
    axes[1].set_ylabel("fraction of validation n-grams")
    axes[1].set_title("validation n-grams never seen in training", loc="left")
    axes[1].set_ylim(0, 1)
    for ax_ in axes:
        ax_.set_xlim(min(orders) - 0.3, max(orders) + 3)
    figs["state_space"] = fig2
    return figs


def check(results: dict[str, Any]) -> None:
    assert np.array(results["bigram"]["counts"]).shape == (27, 27)
    for corpus in (c for c in ("shakespeare", "names") if c in results):
        r = results[corpus]
        unseen = r["val_unseen_ngram_fraction"]
        assert all(a <= b + 1e-12 for a, b in zip(unseen, unseen[1:])), "unseen share grows"
        frac = [s / p for s, p in zip(r["seen_contexts"], r["possible_contexts"])]
        assert frac[-1] < 0.02 and frac[-1] < frac[2], "almost every possible context is unseen"


EXPERIMENT = Experiment(
    name="ngram_state_space",
    stage=1,
    title="Transition matrix and state-space explosion",
    quick=Config(corpora=("names",), orders=(1, 2, 3, 4, 5, 6), seeds=(42,)),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [(f"{c}: half of val n-grams unseen from order",
                        r[c]["first_order_half_unseen"])
                       for c in ("shakespeare", "names") if c in r],
)
