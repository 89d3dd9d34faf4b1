"""Context length: how many previous characters the MLP sees, against Kneser–Ney of the
same context, on the same split.

An n-gram's table grows as V^(n−1) and its counts thin out; the MLP's first layer grows only
linearly, n_context · d_embed · d_hidden, and shares statistical strength through the
embeddings. This sweep measures where that pays. Chapter: stage 4 ("How long a context?").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.mlp.sweeps import fit, short_recipe, val_ids
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    corpus: str = "names"
    contexts: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 1000
    batch_size: int = 16
    val_tokens: int | None = None
    kn_max_order: int = 9  # n-gram codes are int64: 27**17 would overflow


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.ngram import NGramLM

    train_text = data.get_splits(config.corpus).train
    val = val_ids(config.corpus, config.val_tokens)
    mlp: list[dict[str, Any]] = []
    kn: list[float | None] = []
    rows: list[list[Any]] = []
    for n in config.contexts:
        vals, trains = [], []
        for seed in config.seeds:
            r = fit(config.corpus, seed, {"n_context": n},
                    short_recipe(config.max_steps, config.batch_size))
            vals.append(evaluate(r["model"], val).nats)
            trains.append(r["history"][-1]["train_loss"])
        m = mean_sd(vals)
        k = None
        if n + 1 <= config.kn_max_order:
            k = evaluate(NGramLM(n + 1, smoothing="kneser_ney").fit(train_text), val).nats
        mlp.append({"n_context": n, "val_nats": m, "train_nats": mean_sd(trains)})
        kn.append(k)
        rows.append([n, f"{np.mean(trains):.3f}", f"{m['mean']:.3f} ± {m['sd']:.3f}",
                     "—" if k is None else f"{k:.3f}"])
    best = int(np.argmin([x["val_nats"]["mean"] for x in mlp]))
    kn_ok = [(v, n) for v, n in zip(kn, config.contexts) if v is not None]
    return {"contexts": list(config.contexts), "mlp": mlp, "kn_val_nats": kn,
            "best_context": config.contexts[best], "best_val_nats": mlp[best]["val_nats"],
            "kn_best_context": min(kn_ok)[1], "kn_best_val_nats": min(kn_ok)[0],
            "table": {"columns": ["context (chars)", "MLP train",
                                  "MLP validation (mean ± sd)",
                                  "Kneser–Ney validation (order = context + 1)"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.4)
    n = results["contexts"]
    mlp = [x["val_nats"]["mean"] for x in results["mlp"]]
    tr = [x["train_nats"]["mean"] for x in results["mlp"]]
    ax.plot(n, mlp, marker="o", ms=3, color=PALETTE[1])
    direct_label(ax, n, mlp, "MLP validation", color=PALETTE[1])
    ax.plot(n, tr, ls="--", lw=1.0, color=PALETTE[1], alpha=0.7)
    direct_label(ax, n, tr, "MLP training", color=PALETTE[1])
    kn = [(c, v) for c, v in zip(n, results["kn_val_nats"]) if v is not None]
    ax.plot([c for c, _ in kn], [v for _, v in kn], marker="o", ms=3, color=PALETTE[0])
    direct_label(ax, [c for c, _ in kn], [v for _, v in kn], "Kneser–Ney validation",
                 color=PALETTE[0])
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(x) for x in n])
    ax.set_xlim(min(n) * 0.9, max(n) * 3.5)
    ax.set_xlabel("context (previous characters)")
    ax.set_ylabel("cross-entropy (nats per character)")
    return {"context_length": fig}


def check(results: dict[str, Any]) -> None:
    mlp = [x["val_nats"]["mean"] for x in results["mlp"]]
    # more context helps: the best context is longer than one character, and beats it clearly
    assert results["best_context"] > results["contexts"][0]
    assert mlp[0] - min(mlp) > 0.05, mlp


EXPERIMENT = Experiment(
    name="mlp_context", stage=4, title="Context length",
    quick=Config(contexts=(1, 4), seeds=(0,), max_steps=150, batch_size=8, val_tokens=20_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("best MLP context", r["best_context"]),
                       ("best MLP val", r["best_val_nats"]["mean"]),
                       ("best KN context", r["kn_best_context"]),
                       ("best KN val", r["kn_best_val_nats"])],
)
