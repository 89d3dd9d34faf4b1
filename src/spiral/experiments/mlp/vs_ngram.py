"""The MLP language model against stage 1's n-grams, on the same splits, with one evaluator.

For each corpus: the default MLP recipe (``spiral train mlp``'s defaults) over several seeds,
and n-gram models (Laplace orders 1–3, interpolated Kneser–Ney orders 3–6, D = 0.75) fitted
on the same training text, all scored by :func:`spiral.evaluate.evaluate` on validation.
Also recorded: parameters (or stored n-gram counts) and training tokens per parameter,
the quantities that explain where each model wins. Chapter: stage 4 ("Against the n-grams").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    corpora: tuple[str, ...] = ("names", "shakespeare")
    seeds: tuple[int, ...] = (0, 1, 2)
    shakespeare_seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int | None = None         # None: the default recipe
    batch_size: int | None = None        # None: the default recipe
    laplace_orders: tuple[int, ...] = (1, 2, 3)
    kn_orders: tuple[int, ...] = (3, 4, 5, 6)
    val_tokens: int | None = None        # None: the whole validation split


def _ngram_count(model: Any) -> int:
    """Distinct n-grams stored over all orders 1..n: the count model's 'parameters'."""
    return int(sum(len(t.codes) for t in model.raw))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.ngram import NGramLM
    from spiral.recipes.mlp import train_mlp
    from spiral.tokenizers.char import CharTokenizer

    out: dict[str, Any] = {}
    for corpus in config.corpora:
        splits = data.get_splits(corpus)
        tok = CharTokenizer.from_text(splits.train)
        val = tok.encode_array(splits.val)[: config.val_tokens]
        n_train = len(splits.train)
        over = {k: v for k, v in (("max_steps", config.max_steps),
                                  ("batch_size", config.batch_size)) if v is not None}
        seeds = config.seeds if corpus == "names" else config.shakespeare_seeds
        runs = []
        for seed in seeds:
            r = train_mlp(corpus, None, seed=seed, train_overrides=over, progress=False)
            nats = evaluate(r["model"], val).nats
            runs.append({"seed": seed, "val_nats": nats, "train_s": r["train_s"],
                         "final_train_loss": r["history"][-1]["train_loss"],
                         "n_parameters": r["config"]["n_parameters"]})
        n_params = runs[0]["n_parameters"]
        rows: list[list[Any]] = []
        ngrams = {}
        for smoothing, orders in (("laplace", config.laplace_orders),
                                  ("kneser_ney", config.kn_orders)):
            for n in orders:
                lm = NGramLM(n, smoothing=smoothing).fit(splits.train)
                nats = evaluate(lm, val).nats
                label = f"{n}-gram {'add-1' if smoothing == 'laplace' else 'Kneser–Ney'}"
                ngrams[label] = {"order": n, "val_nats": nats, "stored": _ngram_count(lm)}
                rows.append([label, n - 1, ngrams[label]["stored"], f"{nats:.3f}"])
        mlp = mean_sd([x["val_nats"] for x in runs])
        rows.append([f"MLP (default recipe, {len(runs)} seed{'s' if len(runs) > 1 else ''})",
                     r["config"]["model_config"]["n_context"], n_params,
                     f"{mlp['mean']:.3f} ± {mlp['sd']:.3f}" if len(runs) > 1
                     else f"{mlp['mean']:.3f}"])
        best_kn = min((v["val_nats"], k) for k, v in ngrams.items() if "Kneser" in k)
        out[corpus] = {
            "mlp_val_nats": mlp, "mlp_runs": runs, "ngrams": ngrams,
            "mlp_parameters": n_params, "train_tokens": n_train,
            "tokens_per_parameter": n_train / n_params,
            "best_kn": {"label": best_kn[1], "val_nats": best_kn[0]},
            "mlp_minus_best_kn": mlp["mean"] - best_kn[0],
            "mlp_train_s": mean_sd([x["train_s"] for x in runs]),
            "table": {"columns": ["model", "context (chars)", "parameters / stored counts",
                                  "validation nats/char"], "rows": rows},
        }
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    corpora = [c for c in ("names", "shakespeare") if c in results]
    fig, axes = new_figure(1, len(corpora), width=4.8 * len(corpora), height=3.4)
    axes = np.atleast_1d(axes)
    for ax, corpus in zip(axes, corpora):
        r = results[corpus]
        labels = list(r["ngrams"]) + ["MLP"]
        vals = [r["ngrams"][k]["val_nats"] for k in r["ngrams"]] + [r["mlp_val_nats"]["mean"]]
        colors = [PALETTE[6] if "add-1" in k else PALETTE[0] for k in r["ngrams"]] + [PALETTE[1]]
        y = np.arange(len(labels))
        ax.barh(y, vals, color=colors, height=0.6)
        for yi, v in zip(y, vals):
            ax.text(v + 0.02, yi, f"{v:.3f}", va="center", fontsize=7)
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("validation cross-entropy (nats per character)")
        ax.set_title(corpus, loc="left", fontsize=9)
        ax.set_xlim(0, max(vals) * 1.15)
    return {"mlp_vs_ngram": fig}


def check(results: dict[str, Any]) -> None:
    for corpus, r in results.items():
        # the MLP must beat every add-1 n-gram of order <= 3 (it sees more context)
        add1 = [v["val_nats"] for k, v in r["ngrams"].items() if "add-1" in k]
        assert r["mlp_val_nats"]["mean"] < min(add1), (corpus, r["mlp_val_nats"], add1)


EXPERIMENT = Experiment(
    name="mlp_vs_ngram", stage=4, title="The MLP against the n-grams",
    quick=Config(corpora=("names",), seeds=(0,), max_steps=300, batch_size=16, kn_orders=(3,),
                 laplace_orders=(1, 2, 3), val_tokens=20_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{c} MLP val", r[c]["mlp_val_nats"]["mean"]) for c in r]
    + [(f"{c} best KN ({r[c]['best_kn']['label']})", r[c]["best_kn"]["val_nats"]) for c in r],
)
