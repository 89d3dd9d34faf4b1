"""Order sweep: training vs validation cross-entropy of n-gram models of order 1..10.

For every order we fit unsmoothed (MLE), Laplace, tuned add-k and tuned interpolated
Kneser–Ney models; k and the discount are chosen on the tune split, the best order too, and
validation is reported once. Training loss falls with the order; validation loss falls,
bottoms out and (for add-k) rises again: the context-length trade-off, measured.
Chapter: stages/stage-01-ngrams ("How long a context?").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.ngram import corpora as nc
from spiral.ngram import NGramLM
from spiral.plotting import PALETTE, direct_label, new_figure

SMOOTHERS = ("mle", "laplace", "add_k", "kneser_ney")
LABELS = {"mle": "unsmoothed", "laplace": "Laplace", "add_k": "add-k (tuned)",
          "kneser_ney": "Kneser–Ney (tuned)"}


@dataclass(frozen=True)
class Config:
    corpora: tuple[str, ...] = ("shakespeare", "names")
    orders: tuple[int, ...] = tuple(range(1, 11))
    seeds: tuple[int, ...] = (42, 0, 1)  # names split seeds; Shakespeare is deterministic
    k_grid: tuple[float, ...] = nc.K_GRID
    d_grid: tuple[float, ...] = nc.D_GRID
    max_chars: int | None = None
    train_eval: int | None = None  # score only this many training items (quick runs)


def _sweep(c: nc.Corpus, config: Config) -> dict[str, Any]:
    out: dict[str, Any] = {s: {"train": [], "val": [], "tune": [], "param": []} for s in SMOOTHERS}
    out["mle"]["val_zero_prob_fraction"] = []
    for n in config.orders:
        full = NGramLM(n).fit(c.train)
        part = NGramLM(n).fit(c.fit)
        k, _ = nc.tune(part, c.tune, "add_k", config.k_grid)
        d, _ = nc.tune(part, c.tune, "kneser_ney", config.d_grid)
        settings = {"mle": ("none", 1.0), "laplace": ("laplace", 1.0), "add_k": ("add_k", k),
                    "kneser_ney": ("kneser_ney", d)}
        for s, (smoothing, v) in settings.items():
            lm, lm_part = (m.with_smoothing(smoothing, k=v, discount=v) for m in (full, part))
            out[s]["train"].append(lm.cross_entropy(c.train[: config.train_eval]))
            val_nll = lm.token_nll(c.val)
            out[s]["val"].append(float(val_nll.mean()))
            out[s]["tune"].append(lm_part.cross_entropy(c.tune))
            out[s]["param"].append(v)
            if s == "mle":
                out[s]["val_zero_prob_fraction"].append(float(np.mean(np.isinf(val_nll))))
    for s in SMOOTHERS:
        i = int(np.argmin(out[s]["tune"]))  # the order is chosen on the tune split
        out[s]["chosen_order"] = config.orders[i]
        out[s]["chosen_val"] = out[s]["val"][i]
        out[s]["best_val_order"] = config.orders[int(np.argmin(out[s]["val"]))]
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    res: dict[str, Any] = {"orders": list(config.orders)}
    for corpus in config.corpora:
        runs = [_sweep(nc.load(corpus, seed, config.max_chars), config)
                for seed in nc.seeds_for(corpus, config.seeds)]
        r: dict[str, Any] = {"runs": runs, "deterministic": corpus != "names"}
        for s in SMOOTHERS:
            r[s] = {
                "chosen_order": [x[s]["chosen_order"] for x in runs],
                "chosen_val_nats": mean_sd([x[s]["chosen_val"] for x in runs]),
                "val_nats_by_order": np.mean([x[s]["val"] for x in runs], axis=0).tolist(),
                "train_nats_by_order": np.mean([x[s]["train"] for x in runs], axis=0).tolist(),
            }
        r["kn_best_order"] = runs[0]["kneser_ney"]["chosen_order"]
        r["kn_best_val_nats"] = r["kneser_ney"]["chosen_val_nats"]
        r["kn_best_val_bits"] = mean_sd(
            [x["kneser_ney"]["chosen_val"] / math.log(2) for x in runs])
        r["mle_zero_prob_fraction_by_order"] = np.mean(
            [x["mle"]["val_zero_prob_fraction"] for x in runs], axis=0).tolist()
        r["table"] = _table(r, runs, config)
        res[corpus] = r
    return res


def _fmt(v: float) -> str:
    return "∞" if not math.isfinite(v) else f"{v:.3f}"


def _table(r: dict[str, Any], runs: list[dict[str, Any]], config: Config) -> dict[str, Any]:
    rows = []
    for i, n in enumerate(config.orders):
        row: list[Any] = [n]
        for s in SMOOTHERS:
            row += [_fmt(r[s]["train_nats_by_order"][i]), _fmt(r[s]["val_nats_by_order"][i])]
        row.append(f"{runs[0]['add_k']['param'][i]:.2g}")
        row.append(f"{runs[0]['kneser_ney']['param'][i]:.2g}")
        rows.append(row)
    cols = ["order"]
    for s in SMOOTHERS:
        cols += [f"{LABELS[s]} train", f"{LABELS[s]} val"]
    return {"columns": cols + ["tuned k", "tuned D"], "rows": rows}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    corpora = [c for c in ("shakespeare", "names") if c in results]
    fig, axes = new_figure(1, len(corpora), width=5.0 * len(corpora), height=3.6, sharey=False)
    axes = np.atleast_1d(axes)
    orders = results["orders"]
    for ax, corpus in zip(axes, corpora):
        r = results[corpus]
        for color, s in zip(PALETTE, SMOOTHERS):
            val = np.array(r[s]["val_nats_by_order"], dtype=float)
            train = np.array(r[s]["train_nats_by_order"], dtype=float)
            ax.plot(orders, train, ls="--", lw=1.0, color=color, alpha=0.7)
            ok = np.isfinite(val)
            if ok.any():
                ax.plot(np.array(orders)[ok], val[ok], color=color, marker="o", ms=3)
                direct_label(ax, list(np.array(orders)[ok]), list(val[ok]), LABELS[s],
                             color=color, dy={"laplace": 5, "add_k": -5}.get(s, 0))
            if (~ok).any():
                ax.annotate(f"{LABELS[s]}: validation ∞ from order {orders[int(np.argmin(ok))]}",
                            xy=(0.02, 0.02), xycoords="axes fraction", fontsize=7, color=color)
        ax.set_xlabel("order n (context = n − 1 characters)")
        ax.set_ylabel("cross-entropy (nats per character)")
        ax.set_title(f"{corpus}: validation (solid), training (dashed)", loc="left", fontsize=9)
        ax.set_ylim(0, 4.5)
        ax.set_xlim(min(orders) - 0.3, max(orders) + 3.5)
    return {"order_sweep": fig}


def check(results: dict[str, Any]) -> None:
    for corpus in (c for c in ("shakespeare", "names") if c in results):
        r = results[corpus]
        train = r["add_k"]["train_nats_by_order"]
        assert all(a >= b - 1e-9 for a, b in zip(train, train[1:])) or corpus == "names", \
            "training loss should fall with the order"
        lap = [float(v) for v in r["laplace"]["val_nats_by_order"]]
        i = int(np.argmin(lap))
        assert 0 < i < len(lap) - 1, "Laplace validation loss should bottom out inside the sweep"
        kn = [float(v) for v in r["kneser_ney"]["val_nats_by_order"]]
        assert min(kn) < min(lap), "Kneser–Ney should beat Laplace at the best order"
        assert r["mle_zero_prob_fraction_by_order"][-1] > 0, "MLE meets unseen events"
    if "shakespeare" in results and len(results["orders"]) >= 6:
        kn = results["shakespeare"]["kneser_ney"]["val_nats_by_order"]
        lap = results["shakespeare"]["laplace"]["val_nats_by_order"]
        assert kn[4] < lap[4], "Kneser–Ney beats Laplace at order 5"


EXPERIMENT = Experiment(
    name="ngram_order_sweep",
    stage=1,
    title="Order sweep: the context-length trade-off",
    quick=Config(corpora=("shakespeare",), orders=(1, 2, 3, 4, 5), train_eval=100_000,
                 k_grid=(0.01, 0.1, 1.0), d_grid=(0.7, 0.9)),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [
        (f"{c} KN best val (nats)", f"{r[c]['kn_best_val_nats']['mean']:.3f}")
        for c in ("shakespeare", "names") if c in r
    ],
)
