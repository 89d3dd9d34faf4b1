"""LoRA's quality against its rank (1 … 64) and against which matrices get adapters.

At one learning rate (LoRA's, chosen on validation by ``finetune_methods``) and α = 16, the
rank sweeps 1 → 64 with adapters on every attention and FFN projection; then, at r = 8, the
adapters go on the attention projections only (qkv, out) or the FFN only (w1, w3, w2). Full
fine-tuning at its own chosen rate is the reference line. Each point: names validation loss,
mean over the seeds, and the number of trainable parameters r·Σ(in + out).
Paper: Hu et al. (2021), LoRA, section 7 (which matrices, which rank). Chapter: stage 15.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.finetune.common import (
    QUICK_RUN,
    STANDIN,
    RunConfig,
    base_scores,
    lora,
    run_one,
)
from spiral.experiments.framework import Experiment, mean_sd
from spiral.finetune.recipe import FinetuneConfig
from spiral.plotting import PALETTE, new_figure

ATTN, FFN = ("qkv_proj", "out_proj"), ("w1", "w3", "w2", "fc", "proj")


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    run: RunConfig = RunConfig()
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    lr: float = 1e-2          # LoRA's rate as chosen in finetune_methods (top of its grid)
    full_lr: float = 1e-3     # full fine-tuning's chosen rate
    seeds: tuple[int, ...] = (0,)   # one run per point (30 min on one core); add seeds if time


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    rc = config.run

    def point(ft: FinetuneConfig, lr: float) -> dict[str, Any]:
        runs = [run_one(config.base, ft, lr, s, rc) for s in config.seeds]
        return {"val": mean_sd([r["val"] for r in runs]), "trainable": runs[0]["trainable"],
                "fraction": runs[0]["fraction"]}

    out: dict[str, Any] = {"ranks": list(config.ranks), "by_rank": {}, "by_targets": {},
                           "base_val": base_scores(config.base, rc)["val"]}
    for r in config.ranks:
        out["by_rank"][str(r)] = point(lora(r), config.lr)
    r8 = 8 if 8 in config.ranks else config.ranks[0]
    out["targets_rank"] = r8
    out["by_targets"]["attention + FFN"] = out["by_rank"][str(r8)]
    out["by_targets"]["attention only"] = point(lora(r8, ATTN), config.lr)
    out["by_targets"]["FFN only"] = point(lora(r8, FFN), config.lr)
    out["full"] = point(FinetuneConfig("full"), config.full_lr)
    full = out["full"]["val"]["mean"]
    within = [r for r in config.ranks if out["by_rank"][str(r)]["val"]["mean"] - full <= 0.03]
    out["smallest_rank_within_0.03"] = min(within) if within else None
    out["table"] = {"columns": ["adapters", "rank", "trainable parameters", "share",
                                "names val (nats)", "minus full (nats)"],
                    "rows": [["attention + FFN", r, v["trainable"], f"{100 * v['fraction']:.2f} %",
                              f"{v['val']['mean']:.3f}", f"{v['val']['mean'] - full:+.3f}"]
                             for r, v in ((int(k), v) for k, v in out["by_rank"].items())]
                    + [[k, r8, v["trainable"], f"{100 * v['fraction']:.2f} %",
                        f"{v['val']['mean']:.3f}", f"{v['val']['mean'] - full:+.3f}"]
                       for k, v in out["by_targets"].items() if k != "attention + FFN"]}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.2)
    ranks = results["ranks"]
    v = [results["by_rank"][str(r)]["val"] for r in ranks]
    ax.errorbar(ranks, [x["mean"] for x in v], yerr=[x["sd"] for x in v], marker="o",
                color=PALETTE[0], capsize=3, label="LoRA, attention + FFN")
    full = results["full"]["val"]
    ax.axhline(full["mean"], color=PALETTE[1], ls="--", lw=1, label="full fine-tuning")
    ax.axhspan(full["mean"], full["mean"] + 0.03, color=PALETTE[1], alpha=0.12, lw=0,
               label="within 0.03 nats of full")
    r8 = results["targets_rank"]
    for i, (k, t) in enumerate(results["by_targets"].items()):
        if k != "attention + FFN":
            ax.plot([r8], [t["val"]["mean"]], marker="s^"[i % 2], ls="", color=PALETTE[2 + i],
                    label=f"LoRA r = {r8}, {k}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("names validation loss (nats/byte)")
    ax.legend(fontsize=7, frameon=False)
    return {"finetune_rank": fig}


def check(results: dict[str, Any]) -> None:
    ranks = results["ranks"]
    counts = [results["by_rank"][str(r)]["trainable"] for r in ranks]
    per_rank = counts[0] // ranks[0]
    assert counts == [per_rank * r for r in ranks]  # r·Σ(in + out): linear in r
    t = results["by_targets"]
    assert t["attention only"]["trainable"] + t["FFN only"]["trainable"] == \
        t["attention + FFN"]["trainable"]
    for v in (*results["by_rank"].values(), *t.values()):  # every adapter learned something
        assert v["val"]["mean"] < results["base_val"], v


EXPERIMENT = Experiment(
    name="finetune_rank", stage=15, title="LoRA quality against rank and target matrices",
    quick=replace(Config(), base=STANDIN, run=QUICK_RUN, ranks=(1, 8), seeds=(0,), lr=1e-2,
                  full_lr=3e-3),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("smallest rank within 0.03 nats of full",
                        r["smallest_rank_within_0.03"])],
)
