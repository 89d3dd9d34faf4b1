"""What the embeddings learn: a PCA picture of the character vectors of a Shakespeare MLP.

Nothing tells the model that 'a' and 'e' are both vowels; if their rows of E end up close,
it is because they predict (and are predicted by) similar contexts. We measure that with
mean cosine similarity within and between character classes, and draw the first two
principal components. Tiny Shakespeare holds a single digit ('3'), so there is no digit
cluster to find in it. Chapter: stage 4 ("What the embeddings learn").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.mlp.sweeps import fit, short_recipe
from spiral.plotting import PALETTE, new_figure

VOWELS = set("aeiou")


def char_class(c: str) -> str:
    if c.isalpha():
        kind = "vowel" if c.lower() in VOWELS else "consonant"
        return f"{'upper' if c.isupper() else 'lower'}case {kind}"
    if c.isdigit():
        return "digit"
    if c.isspace():
        return "whitespace"
    return "punctuation"


@dataclass(frozen=True)
class Config:
    corpus: str = "shakespeare"
    d_embed: int = 16
    n_context: int = 8
    max_steps: int = 1500
    batch_size: int = 16
    seed: int = 0


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) rows -> (N, k) coordinates on the top-k principal axes, and explained ratios."""
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:k].T, (s**2 / (s**2).sum())[:k]


def class_similarity(emb: np.ndarray, chars: list[str]) -> dict[str, dict[str, float]]:
    """Mean cosine similarity between the embeddings of every pair of classes (i != j)."""
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = u @ u.T  # (V, V)
    cls = np.array([char_class(c) for c in chars])
    names = sorted(c for c in set(cls) if (cls == c).sum() > 1)  # a class needs two members
    out: dict[str, dict[str, float]] = {}
    for a in names:
        out[a] = {}
        for b in names:
            mask = (cls[:, None] == a) & (cls[None, :] == b) & ~np.eye(len(chars), dtype=bool)
            out[a][b] = float(cos[mask].mean()) if mask.any() else float("nan")
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    r = fit(config.corpus, config.seed, {"d_embed": config.d_embed,
                                         "n_context": config.n_context},
            short_recipe(config.max_steps, config.batch_size))
    chars = list(r["tokenizer"].itos)
    emb = r["model"].embedding.weight.data[: len(chars)].astype(np.float64)  # drop the pad row
    coords, ratio = pca(emb)
    sim = class_similarity(emb, chars)
    lv, lc = "lowercase vowel", "lowercase consonant"
    rows = [[a] + [f"{sim[a][b]:+.2f}" for b in sim] for a in sim]
    return {"val_nats": r["val_nats"], "chars": chars, "pca": coords.tolist(),
            "explained": ratio.tolist(), "similarity": sim,
            "vowel_within": sim[lv][lv], "vowel_to_consonant": sim[lv][lc],
            "punct_within": sim["punctuation"]["punctuation"],
            "punct_to_lower": sim["punctuation"][lc],
            "table": {"columns": ["class"] + list(sim), "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=6.0, height=5.0)
    xy = np.array(results["pca"])
    classes = sorted({char_class(c) for c in results["chars"]})
    color = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
    for (x, y), ch in zip(xy, results["chars"]):
        label = {"\n": "\\n", " ": "␣"}.get(ch, ch)
        ax.text(x, y, label, color=color[char_class(ch)], fontsize=9, ha="center", va="center",
                family="DejaVu Sans Mono")
    pad = 0.1 * (xy.max(axis=0) - xy.min(axis=0))
    ax.set_xlim(xy[:, 0].min() - pad[0], xy[:, 0].max() + pad[0])
    ax.set_ylim(xy[:, 1].min() - pad[1], xy[:, 1].max() + pad[1])
    ev = results["explained"]
    ax.set_xlabel(f"principal component 1 ({100 * ev[0]:.0f} % of variance)")
    ax.set_ylabel(f"principal component 2 ({100 * ev[1]:.0f} %)")
    for i, c in enumerate(classes):
        ax.annotate(c, xy=(1.01, 0.95 - 0.06 * i), xycoords="axes fraction", color=color[c],
                    fontsize=8)
    return {"embedding_pca": fig}


def check(results: dict[str, Any]) -> None:
    # vowels resemble each other more than they resemble consonants
    assert results["vowel_within"] > results["vowel_to_consonant"], results["similarity"]


EXPERIMENT = Experiment(
    name="mlp_embeddings", stage=4, title="Embedding space (PCA)",
    quick=Config(max_steps=200, batch_size=8),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("vowel-vowel cos", r["vowel_within"]),
                       ("vowel-consonant cos", r["vowel_to_consonant"]),
                       ("punct-punct cos", r["punct_within"])],
)
