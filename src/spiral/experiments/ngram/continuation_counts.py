"""Why Kneser–Ney's lower order counts contexts, not occurrences — derived, then measured.

Interpolated absolute discounting at order 2 is

    P(w | v) = max(c(vw) − D, 0)/c(v) + γ(v) P_low(w),    γ(v) = D N₁₊(v•)/c(v).

Ask that the model reproduce the unigram marginal it was trained on,
Σ_v c(v) P(w | v) = c(w). With every seen count c(vw) ≥ 1 ≥ D the discounted sum is
c(w) − D N₁₊(•w), and Σ_v c(v) γ(v) = D N₁₊(••), so the constraint holds exactly when

    P_low(w) = N₁₊(•w) / N₁₊(••)        (Kneser & Ney 1995; Chen & Goodman 1998, §2.7).

We measure the constraint's violation with that continuation unigram and with the plain
unigram c(w)/N, their validation NLL, the characters where the two rankings disagree, and
(for the chapter's exercise on long contexts) how far γ(h)/D = N₁₊(h•)/c(h) is from 1 at
order 10 and how often a validation context of that order was never seen.
Chapter: stages/stage-01-ngrams ("Kneser–Ney").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    corpus: str = "shakespeare"
    discount: float = 0.75
    max_chars: int | None = None  # a prefix of each split (quick variant)
    pair: tuple[str, str] = ("h", ":")  # frequent but few contexts / rarer but many
    long_order: int = 10


def _bigram(train: str, val: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    vocab = sorted(set(train))
    idx = {ch: i for i, ch in enumerate(vocab)}
    ids = np.array([idx[ch] for ch in train])
    counts = np.zeros((len(vocab), len(vocab)))  # (previous, next)
    np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
    vids = np.array([idx.get(ch, -1) for ch in val])
    return vocab, counts, vids


def _interpolated(counts: np.ndarray, low: np.ndarray, d: float) -> np.ndarray:
    c_v = counts.sum(1, keepdims=True)
    gamma = d * (counts > 0).sum(1, keepdims=True) / c_v
    return np.maximum(counts - d, 0.0) / c_v + gamma * low[None, :]


def _long_contexts(train: str, val: str, order: int) -> dict[str, Any]:
    n = order - 1
    total: Counter[str] = Counter(train[i:i + n] for i in range(len(train) - n))
    follow: defaultdict[str, set[str]] = defaultdict(set)
    for i in range(len(train) - n):
        follow[train[i:i + n]].add(train[i + n])
    used = [val[i:i + n] for i in range(len(val) - n)]
    c = np.array([total.get(h, 0) for h in used], dtype=float)
    types = np.array([len(follow[h]) if h in follow else 0 for h in used], dtype=float)
    seen = c > 0
    ratio = types[seen] / c[seen]
    bins = {"c=1": (1, 1), "c=2": (2, 2), "c=3-5": (3, 5), "c=6-20": (6, 20)}
    by = {k: float(ratio[(c[seen] >= a) & (c[seen] <= b)].mean()) for k, (a, b) in bins.items()}
    return {"order": order, "val_unseen_context_fraction": float(1 - seen.mean()),
            "gamma_over_d_val_weighted": float(ratio.mean()), "gamma_over_d_by_count": by}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import data

    s = data.get_splits(config.corpus)
    train, val = s.train[:config.max_chars], s.val[:config.max_chars]
    vocab, counts, vids = _bigram(train, val)
    occ = counts.sum(0)  # c(w) as a successor
    cont = (counts > 0).sum(0).astype(float)  # N₁₊(•w)
    lows = {"continuation": cont / cont.sum(), "unigram": occ / occ.sum()}
    c_v = counts.sum(1)
    out: dict[str, Any] = {"vocab_size": len(vocab)}
    ok = vids >= 0
    prev, nxt = vids[:-1], vids[1:]
    keep = ok[:-1] & ok[1:]
    for name, low in lows.items():
        p = _interpolated(counts, low, config.discount)
        implied = c_v @ p  # Σ_v c(v) P(w | v)
        err = np.abs(implied - occ) / occ.sum()
        out[name] = {"marginal_tv": float(0.5 * err.sum()),
                     "marginal_max_rel": float(np.max(np.abs(implied - occ) / occ)),
                     "val_nats": float(-np.mean(np.log(p[prev[keep], nxt[keep]])))}
    a, b = (vocab.index(ch) for ch in config.pair)
    u, sp = vocab.index("u"), vocab.index(" ")
    out["pair"] = {"chars": list(config.pair), "count": [int(occ[a]), int(occ[b])],
                   "contexts": [int(cont[a]), int(cont[b])],
                   "top_share": [float(counts[:, a].max() / occ[a]),
                                 float(counts[:, b].max() / occ[b])],
                   "top_prev": [vocab[int(counts[:, a].argmax())],
                                vocab[int(counts[:, b].argmax())]]}
    out["u_space"] = {"contexts_u": int(cont[u]), "contexts_space": int(cont[sp]),
                      "qu_share_of_u": float(counts[vocab.index("q"), u] / occ[u]),
                      "top_share_u": float(counts[:, u].max() / occ[u])}
    out["points"] = {"chars": vocab, "count": occ.tolist(), "contexts": cont.tolist()}
    out["long"] = _long_contexts(train, val, config.long_order)
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.6)
    pts = results["points"]
    ax.scatter(pts["count"], pts["contexts"], s=8, color=PALETTE[0])
    for ch, x, y in zip(pts["chars"], pts["count"], pts["contexts"]):
        if ch in results["pair"]["chars"] or ch in ("u", " "):
            label = {" ": "space", "\n": "newline"}.get(ch, f"'{ch}'")
            ax.annotate(label, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8,
                        color=PALETTE[1])
    ax.set_xscale("log")
    ax.set_xlabel("occurrences c(w) in the training text")
    ax.set_ylabel("distinct preceding characters N₁₊(•w)")
    return {"continuation_counts": fig}


def check(results: dict[str, Any]) -> None:
    # the derivation: the continuation unigram satisfies the marginal constraint exactly
    assert results["continuation"]["marginal_tv"] < 1e-12, results["continuation"]
    assert results["unigram"]["marginal_tv"] > 1e-4, results["unigram"]
    # the chapter's pair: the first is more frequent but follows fewer distinct characters
    pair = results["pair"]
    assert pair["count"][0] > 2 * pair["count"][1] and pair["contexts"][0] < pair["contexts"][1]


EXPERIMENT = Experiment(
    name="ngram_continuation_counts", stage=1, title="Kneser–Ney's continuation counts",
    quick=Config(max_chars=200_000, long_order=6), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("marginal TV, continuation", r["continuation"]["marginal_tv"]),
                       ("marginal TV, unigram", r["unigram"]["marginal_tv"]),
                       ("val nats cont / unigram", f"{r['continuation']['val_nats']:.4f} / "
                                                   f"{r['unigram']['val_nats']:.4f}")],
)
