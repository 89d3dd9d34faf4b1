"""A small GPT on names (deduplicated 80/10/10 split) against Kneser–Ney, on the TEST split.

Kneser–Ney orders 3–6 are fitted on the training names and the best order is chosen on
validation; the GPT recipe below was fixed before looking at test. Both are then scored once
on the test split with the shared evaluator (names as one stream, newline = end of name).
The GPT is makemore's default transformer size (4 layers, 4 heads, d_model 64), context 16
(longer than every name), trained with the shared loop. Chapter: stage 8, "Names".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.style import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 64
    context_length: int = 16
    max_steps: int = 8000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    dropout: float = 0.0
    kn_orders: tuple[int, ...] = (3, 4, 5, 6)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from spiral import data
    from spiral.evaluate import evaluate
    from spiral.models.gpt import GPT, GPTConfig
    from spiral.ngram import NGramLM
    from spiral.optim import AdamW
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig, train

    s = data.get_splits("names")
    assert s.test is not None
    tok = CharTokenizer.from_text(s.train)
    tr, va, te = (tok.encode_array(x) for x in (s.train, s.val, s.test))
    kn = {}
    for n in config.kn_orders:
        lm = NGramLM(n, smoothing="kneser_ney").fit(s.train)
        kn[n] = {"val": evaluate(lm, va).nats, "test": evaluate(lm, te).nats}
    best = min(kn, key=lambda n: kn[n]["val"])
    runs = []
    for seed in config.seeds:
        cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=config.context_length,
                        n_layers=config.n_layers, n_heads=config.n_heads,
                        d_model=config.d_model, dropout=config.dropout)
        model = GPT(cfg, rng=np.random.default_rng(seed))
        tcfg = TrainConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                           seq_len=config.context_length, lr=config.lr,
                           warmup_steps=config.warmup_steps, eval_interval=config.max_steps,
                           seed=seed, progress=False)
        opt = AdamW(model.param_groups(0.1), lr=config.lr, betas=(0.9, 0.99))
        with threadpool_limits(limits=1, user_api="blas"):
            state = train(model, opt, tr, va, tcfg, np.random.default_rng(seed + 1000))
        runs.append({"seed": seed, "val": state.history[-1]["val_loss"],
                     "test": evaluate(model, te).nats})
    gpt_test = mean_sd([r["test"] for r in runs])
    gpt_val = mean_sd([r["val"] for r in runs])
    rows = [[f"{n}-gram Kneser–Ney" + (" (chosen on val)" if n == best else ""),
             f"{kn[n]['val']:.3f}", f"{kn[n]['test']:.3f}"] for n in config.kn_orders]
    rows.append([f"GPT {config.n_layers}×{config.d_model}, {model.num_parameters():,} params, "
                 f"{len(runs)} seeds", f"{gpt_val['mean']:.3f} ± {gpt_val['sd']:.3f}",
                 f"{gpt_test['mean']:.3f} ± {gpt_test['sd']:.3f}"])
    return {"kn": {str(n): v for n, v in kn.items()}, "kn_best_order": best,
            "kn_best_test": kn[best]["test"], "gpt_test": gpt_test, "gpt_val": gpt_val,
            "runs": runs, "gpt_minus_kn_test": gpt_test["mean"] - kn[best]["test"],
            "n_parameters": model.num_parameters(),
            "table": {"columns": ["model", "validation nats/char", "test nats/char"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=2.6)
    labels = [f"KN-{n}" for n in results["kn"]] + ["GPT"]
    vals = [v["test"] for v in results["kn"].values()] + [results["gpt_test"]["mean"]]
    errs = [0.0] * len(results["kn"]) + [results["gpt_test"]["sd"]]
    colors = [PALETTE[0]] * len(results["kn"]) + [PALETTE[1]]
    y = np.arange(len(labels))
    ax.barh(y, vals, xerr=errs, color=colors, height=0.6)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(min(vals) - 0.1, max(vals) + 0.05)
    for yi, v in zip(y, vals, strict=True):
        ax.text(v + 0.005, yi, f"{v:.3f}", va="center", fontsize=8)
    ax.set_xlabel("test loss (nats/char; lower is better)")
    return {"names_test": fig}


def check(results: dict[str, Any]) -> None:
    """The GPT beats the best Kneser–Ney order on the test names."""
    assert results["gpt_test"]["mean"] < results["kn_best_test"], results["table"]


EXPERIMENT = Experiment(
    name="transformer_names", stage=8, title="A small GPT on names vs Kneser–Ney",
    quick=Config(seeds=(0,), n_layers=2, d_model=32, max_steps=600, kn_orders=(2,),
                 lr=1e-2),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("GPT test", f"{r['gpt_test']['mean']:.3f}"),
                       ("best KN test", f"{r['kn_best_test']:.3f}")],
)
