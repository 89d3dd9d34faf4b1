"""One head or four, on real text trained past the n-gram baselines (names, 3 seeds).

Stage 8's head sweep was a single under-trained run on Shakespeare, below trigram
Kneser–Ney, so it could not say whether heads matter on real text. Here a 4-layer,
d_model = 64 GPT is trained on the names split (the one corpus where our small GPTs beat
Kneser–Ney on this machine) with n_heads = 1 (one 64-dimensional head per layer) and
n_heads = 4 (four 16-dimensional heads): identical parameters and matmul FLOPs, only the
number of attention distributions per position differs. Each of 3 seeds trains both
settings with the same recipe for 8,000 steps at batch 16, context 64 and dropout 0.1
(stage 8's names recipe otherwise; one-seed trials of this size reached 2.03 on validation), and the
validation loss (whole split, shared evaluator) is compared with the best Kneser–Ney order
chosen on validation. The test split is not touched: this is a comparison, not a headline
score. Seeds run in worker processes, one BLAS thread each. Chapter: stage 8, "How many
heads?".
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.transformer.names import Config as NamesConfig
from spiral.experiments.transformer.names import _train_seed
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    heads: tuple[int, ...] = (1, 4)
    n_layers: int = 4
    d_model: int = 64
    context_length: int = 64
    max_steps: int = 8000
    dropout: float = 0.1
    lr: float = 2e-3
    kn_orders: tuple[int, ...] = (3, 4, 5, 6)
    workers: int = 2


def _job(config: Config, heads: int, seed: int) -> dict[str, Any]:
    base = replace(NamesConfig(), n_layers=config.n_layers, n_heads=heads,
                   d_model=config.d_model, context_length=config.context_length,
                   max_steps=config.max_steps, dropout=config.dropout, lr=config.lr,
                   windows=(config.context_length,))
    return {"config": asdict(base), "seed": seed, "score_test": False, "heads": heads}


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    out = _train_seed(job)
    return {"heads": job["heads"], "seed": job["seed"], "val": out["val_by_window"][
        str(job["config"]["context_length"])], "train_loss": out["train_loss"],
        "n_parameters": out["n_parameters"]}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.ngram import NGramLM

    s = data.get_splits("names")
    kn = {n: evaluate(lm, lm.encode(s.val)).nats for n in config.kn_orders
          for lm in [NGramLM(n, smoothing="kneser_ney").fit(s.train)]}
    best = min(kn, key=lambda n: kn[n])
    jobs = [_job(config, h, seed) for seed in config.seeds for h in config.heads]
    if config.workers <= 1:
        runs = [_run_job(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=config.workers) as pool:
            runs = list(pool.map(_run_job, jobs))
    by_heads = {str(h): mean_sd([r["val"] for r in runs if r["heads"] == h])
                for h in config.heads}
    h0, h1 = config.heads[0], config.heads[-1]
    diffs = [next(r["val"] for r in runs if r["heads"] == h0 and r["seed"] == s)
             - next(r["val"] for r in runs if r["heads"] == h1 and r["seed"] == s)
             for s in config.seeds]
    d = mean_sd(diffs)
    n = len(diffs)
    t = d["mean"] / (d["sd"] / np.sqrt(n)) if n > 1 and d["sd"] > 0 else float("nan")
    rows = [[f"{n}-gram Kneser–Ney" + (" (best on validation)" if n == best else ""),
             f"{kn[n]:.3f}", "—"] for n in config.kn_orders]
    for h in config.heads:
        m = by_heads[str(h)]
        rows.append([f"GPT {config.n_layers}×{config.d_model}, {h} head(s) of "
                     f"{config.d_model // h} dims, {len(config.seeds)} seeds",
                     f"{m['mean']:.3f} ± {m['sd']:.3f}",
                     f"{m['mean'] - kn[best]:+.3f}"])
    return {"kn_val": {str(k): v for k, v in kn.items()}, "kn_best_order": best,
            "kn_best_val": kn[best], "runs": runs, "by_heads": by_heads,
            "paired_diff": d, "paired_diffs": diffs, "paired_t": float(t),
            "n_parameters": runs[0]["n_parameters"],
            "gpt_minus_kn": {str(h): by_heads[str(h)]["mean"] - kn[best]
                             for h in config.heads},
            "table": {"columns": ["model", "validation nats/char",
                                  f"minus KN-{best}"], "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.0, height=2.8)
    heads = sorted(results["by_heads"], key=int)
    for i, h in enumerate(heads):
        vals = [r["val"] for r in results["runs"] if str(r["heads"]) == h]
        ax.plot([i] * len(vals), vals, "o", color=PALETTE[1], alpha=0.6)
        m = results["by_heads"][h]
        ax.errorbar([i + 0.12], [m["mean"]], yerr=[m["sd"]], fmt="s", color=PALETTE[2],
                    capsize=3)
    for seed in sorted({r["seed"] for r in results["runs"]}):
        ys = [next(r["val"] for r in results["runs"] if str(r["heads"]) == h
                   and r["seed"] == seed) for h in heads]
        ax.plot(range(len(heads)), ys, "-", color="0.7", lw=0.8, zorder=0)
    ax.axhline(results["kn_best_val"], color=PALETTE[0], ls="--", lw=1,
               label=f"KN-{results['kn_best_order']} (best n-gram)")
    ax.set_xticks(range(len(heads)), [f"{h} head(s)" for h in heads])
    ax.set_xlim(-0.5, len(heads) - 0.5)
    ax.set_ylabel("validation nats/char")
    ax.legend(fontsize=7)
    return {"heads_names": fig}


def check(results: dict[str, Any]) -> None:
    """Every run has a finite validation loss and the paired differences are recorded
    (the chapter reads the sign and spread; the check does not presume a winner)."""
    assert all(np.isfinite(r["val"]) for r in results["runs"]), results["runs"]
    assert len(results["paired_diffs"]) == len({r["seed"] for r in results["runs"]})


EXPERIMENT = Experiment(
    name="transformer_heads_names", stage=8, title="One head or four on names",
    quick=Config(seeds=(0, 1), n_layers=1, d_model=16, context_length=16, max_steps=80,
                 kn_orders=(2,), workers=1, dropout=0.0, lr=1e-2),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{h} head(s)", f"{v['mean']:.3f} ± {v['sd']:.3f}")
                       for h, v in r["by_heads"].items()]
                      + [("best KN", f"{r['kn_best_val']:.3f}")],
)
