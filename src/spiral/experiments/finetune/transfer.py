"""Why fine-tuning works: the pretrained base against the same network from scratch on names.

The same architecture is trained on names for the same number of steps twice: once from the
pretrained weights (full fine-tuning, at the rate ``finetune_methods`` chose) and once from a
random initialisation (its rate chosen on names validation from a small grid, seed 0). Three
seeds each; learning curves on names validation and the final validation loss. If the features
learned on Shakespeare (letters, their frequencies, which letter follows which) carry over,
the pretrained run starts lower and stays ahead at equal compute (Yosinski et al., 2014;
Howard & Ruder, 2018). Chapter: stage 15, "Why fine-tuning works".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.finetune.common import (
    QUICK_RUN,
    STANDIN,
    RunConfig,
    _ids,
    fresh_base,
    run_one,
)
from spiral.experiments.framework import Experiment, mean_sd
from spiral.finetune.recipe import FinetuneConfig
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    run: RunConfig = RunConfig()
    full_lr: float = 1e-3                      # full fine-tuning's rate from finetune_methods
    scratch_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    seeds: tuple[int, ...] = (0, 1, 2)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    rc, ft = config.run, FinetuneConfig("full")
    trial = {lr: run_one(config.base, ft, lr, config.seeds[0], rc, scratch=True)["val"]
             for lr in config.scratch_lrs}
    scratch_lr = min(trial, key=lambda k: trial[k])
    out: dict[str, Any] = {"scratch_lr": scratch_lr,
                           "scratch_lr_selection": {f"{k:g}": v for k, v in trial.items()}}
    val_ids = _ids("val", "names", rc.score_tokens)
    base_model = fresh_base(config.base).model
    out["uniform_nats"] = float(np.log(base_model.config.vocab_size))  # a uniform guess
    out["by_position"] = {"base": loss_by_position(base_model, val_ids)}
    for name, lr, scratch in (("pretrained", config.full_lr, False),
                              ("scratch", scratch_lr, True)):
        runs = [run_one(config.base, ft, lr, s, rc, scratch=scratch) for s in config.seeds]
        out[name] = {"lr": lr, "curves": [r["curve"] for r in runs],
                     "val": mean_sd([r["val"] for r in runs])}
        out["by_position"][name] = loss_by_position(runs[0]["model"], val_ids)
    out["gap"] = mean_sd([s - p for s, p in zip(out["scratch"]["val"]["values"],
                                                out["pretrained"]["val"]["values"])])
    bp = out["by_position"]
    out["position_table"] = {
        "columns": ["model", "first letter of a name", "other letters", "end of name (newline)",
                    "all"],
        "rows": [[label, *(f"{bp[k][c]:.3f}" for c in ("first", "inner", "newline", "all"))]
                 for k, label in (("base", "base, before fine-tuning"),
                                  ("pretrained", "fine-tuned from the base (seed 0)"),
                                  ("scratch", "trained from scratch (seed 0)"))]}
    return out


def loss_by_position(model: Any, ids: np.ndarray) -> dict[str, float]:
    """Mean NLL (nats) of the bytes that start a name, the other letters, and the newline that
    ends a name: where in a name a model's loss comes from."""
    from spiral.evaluate import windows_of

    nll, prev, tgt = [], [], []
    for block in windows_of(ids, model.context_length):
        nll.append(np.asarray(model.window_nll(block), dtype=np.float64).ravel())
        prev.append(block[:, :-1].ravel())
        tgt.append(block[:, 1:].ravel())
    n, p, t = (np.concatenate(a) for a in (nll, prev, tgt))
    nl = ord("\n")
    first, newline = (p == nl) & (t != nl), t == nl
    inner = ~first & ~newline
    return {"first": float(n[first].mean()), "inner": float(n[inner].mean()),
            "newline": float(n[newline].mean()), "all": float(n.mean()),
            "share_first": float(first.mean()), "share_newline": float(newline.mean())}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.2)
    for i, name in enumerate(("pretrained", "scratch")):
        v = results[name]
        steps = [s for s, _ in v["curves"][0]]
        vals = np.array([[x for _, x in c] for c in v["curves"]])
        label = "from the pretrained base" if name == "pretrained" else "from scratch"
        ax.plot(steps, vals.mean(0), marker="o", ms=3, color=PALETTE[i],
                label=f"{label} (lr {v['lr']:g})")
        if len(vals) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=PALETTE[i], alpha=0.2, lw=0)
    ax.set_xlabel("training step on names")
    ax.set_ylabel("names validation loss (nats/byte)")
    ax.legend(fontsize=7, frameon=False)
    return {"finetune_transfer": fig}


def check(results: dict[str, Any]) -> None:
    p, s = results["pretrained"], results["scratch"]
    assert p["val"]["mean"] < s["val"]["mean"]  # the pretrained features transfer
    first = [c[0][1] for c in p["curves"]], [c[0][1] for c in s["curves"]]
    assert np.mean(first[0]) < np.mean(first[1])  # and the head start shows at the first point


EXPERIMENT = Experiment(
    name="finetune_transfer", stage=15, title="Pretrained base vs from scratch on names",
    quick=replace(Config(), base=STANDIN, run=replace(QUICK_RUN, steps=20, eval_interval=10),
                  full_lr=3e-3, scratch_lrs=(3e-3,), seeds=(0,)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("scratch − pretrained, names val (nats)", r["gap"]["mean"])],
)
