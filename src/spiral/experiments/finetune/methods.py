"""Full, frozen, LoRA and QLoRA fine-tuning side by side: quality, forgetting, parameters.

The base model (trained on tiny Shakespeare) is adapted to names by four methods. For full,
freeze and LoRA the learning rate is chosen on names validation from a small grid (seed 0);
QLoRA reuses LoRA's. At the chosen rate each method runs with three seeds; names test is
scored once per run, after every choice was made. Forgetting is the loss on a fixed slice of
Shakespeare validation after fine-tuning (Biderman et al., 2024: "LoRA learns less and forgets
less"). Headlines: LoRA r = 8 minus full (validation, nats), QLoRA minus LoRA, and the share
of parameters each method trains. Chapter: stage 15, "Four ways to adapt a model".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from spiral.experiments.finetune.common import (
    QUICK_RUN,
    STANDIN,
    RunConfig,
    base_scores,
    fresh_base,
    lora,
    run_one,
)
from spiral.experiments.framework import Experiment, mean_sd
from spiral.finetune.recipe import FinetuneConfig
from spiral.plotting import PALETTE, new_figure

METHODS = ("full", "freeze", "lora", "qlora")


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    run: RunConfig = RunConfig()
    lr_grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "full": (3e-4, 1e-3, 3e-3), "freeze": (3e-4, 1e-3, 3e-3), "lora": (1e-3, 3e-3, 1e-2)})
    freeze_blocks: int = 3
    r: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    n_samples: int = 8


def method_config(method: str, config: Config) -> FinetuneConfig:
    if method in ("lora", "qlora"):
        return lora(config.r, qlora=method == "qlora")
    return FinetuneConfig(method, freeze_blocks=config.freeze_blocks)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.generate import sample_text

    rc = config.run
    out: dict[str, Any] = {"base": base_scores(config.base, rc), "methods": {}, "samples": {}}
    tok = fresh_base(config.base).tokenizer
    out["samples"]["base"] = sample_text(fresh_base(config.base).model, tok,
                                         np.random.default_rng(0), n=config.n_samples)
    chosen: dict[str, float] = {}
    for method in METHODS:
        ft = method_config(method, config)
        grid = config.lr_grid["lora" if method == "qlora" else method]
        selection: dict[str, float] = {}
        runs: dict[float, dict[str, Any]] = {}
        if method == "qlora":
            lr = chosen["lora"]
        else:
            for lr_try in grid:  # seed 0, scored on validation only
                runs[lr_try] = run_one(config.base, ft, lr_try, config.seeds[0], rc)
                selection[f"{lr_try:g}"] = runs[lr_try]["val"]
            lr = min(runs, key=lambda k: runs[k]["val"])
        chosen[method] = lr
        per_seed = []
        for seed in config.seeds:
            r = run_one(config.base, ft, lr, seed, rc, test=True)
            if seed == config.seeds[0]:
                out["samples"][method] = sample_text(r["model"], tok, np.random.default_rng(0),
                                                     n=config.n_samples)
            r.pop("model")
            per_seed.append(r)
        out["methods"][method] = {
            "lr": lr, "lr_selection": selection, "trainable": per_seed[0]["trainable"],
            "fraction": per_seed[0]["fraction"], "total": per_seed[0]["total"],
            "curves": [r["curve"] for r in per_seed],
            **{k: mean_sd([r[k] for r in per_seed]) for k in ("val", "test", "forget")}}
    m = out["methods"]
    paired = {  # per seed, the same data order for both methods
        "lora_minus_full": [a - b for a, b in zip(m["lora"]["val"]["values"],
                                                  m["full"]["val"]["values"])],
        "qlora_minus_lora": [a - b for a, b in zip(m["qlora"]["val"]["values"],
                                                   m["lora"]["val"]["values"])]}
    out["gaps"] = {k: mean_sd(v) for k, v in paired.items()}
    out["table"] = {"columns": ["method", "trainable parameters", "share", "lr",
                                "names val (nats)", "names test (nats)",
                                "Shakespeare val (nats)"],
                    "rows": [["base (no fine-tuning)", 0, "0 %", "–",
                              f"{out['base']['val']:.3f}", f"{out['base']['test']:.3f}",
                              f"{out['base']['forget']:.3f}"]] + [
                        [k, v["trainable"], f"{100 * v['fraction']:.2f} %", f"{v['lr']:g}",
                         _pm(v["val"]), _pm(v["test"]), _pm(v["forget"])]
                        for k, v in m.items()]}
    return out


def _pm(s: dict[str, Any]) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f} (1 run)"


def plot(results: dict[str, Any]) -> dict[str, Any]:
    curves, ax = new_figure(width=5.6, height=3.2)
    # from the first evaluation on: the base's loss (step 0) is far above, off the scale,
    # and would flatten the differences between the methods to one line
    for i, (name, v) in enumerate(results["methods"].items()):
        steps = [s for s, _ in v["curves"][0]]
        vals = np.array([[x for _, x in c] for c in v["curves"]])
        ax.plot(steps, vals.mean(0), marker="o", ms=3, color=PALETTE[i], label=name)
        if len(vals) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=PALETTE[i], alpha=0.2, lw=0)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("names validation loss (nats/byte)")
    ax.set_title(f"the base model starts at {results['base']['val']:.2f} (step 0, off the scale)",
                 fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    pareto, ax2 = new_figure(width=5.0, height=3.4)
    b = results["base"]
    ax2.plot([b["val"]], [b["forget"]], "k*", ms=9, label="base")
    for i, (name, v) in enumerate(results["methods"].items()):
        ax2.errorbar(v["val"]["mean"], v["forget"]["mean"], xerr=v["val"]["sd"],
                     yerr=v["forget"]["sd"], marker="o", color=PALETTE[i], capsize=3,
                     label=f"{name} ({100 * v['fraction']:.1f} % trained)")
    ax2.set_xlabel("names validation loss (adaptation; lower is better)")
    ax2.set_ylabel("Shakespeare validation loss\n(forgetting; lower is better)")
    ax2.legend(fontsize=7, frameon=False)
    return {"finetune_curves": curves, "finetune_pareto": pareto}


def check(results: dict[str, Any]) -> None:
    base = results["base"]
    for name, v in results["methods"].items():
        assert v["val"]["mean"] < base["val"], (name, v["val"], base["val"])  # it adapted
        assert v["forget"]["mean"] > base["forget"] - 0.01, name  # names do not teach Bard
    m = results["methods"]
    assert m["lora"]["trainable"] < m["freeze"]["trainable"] < m["full"]["trainable"]
    assert m["lora"]["trainable"] == m["qlora"]["trainable"]
    # r·Σ(in + out) against Σ in·out: at d = 192 and r = 8 that is ≈ 8·(1/192 + 1/512) ≈ 6 %
    # of each adapted matrix, so the share is ~6 % on the book's model, not the plan's < 2 %
    # (the rank sweep's table shows what rank and which matrices stay under 2 %)


EXPERIMENT = Experiment(
    name="finetune_methods", stage=15, title="Full, frozen, LoRA and QLoRA fine-tuning on names",
    quick=replace(Config(), base=STANDIN, run=QUICK_RUN, seeds=(0,), n_samples=2, freeze_blocks=1,
                  lr_grid={"full": (3e-3,), "freeze": (3e-3,), "lora": (1e-2,)}),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("LoRA − full (nats)", r["gaps"]["lora_minus_full"]["mean"]),
                       ("QLoRA − LoRA (nats)", r["gaps"]["qlora_minus_lora"]["mean"])],
)
