"""What fewer key/value heads cost in validation loss, beside what they save in KV cache.

Small Llama-style character models (RMSNorm, SwiGLU, RoPE, no biases; d 64, 2 layers, 4
query heads) are trained with stage 8's recipe on tiny Shakespeare with Hkv = 4 (MHA), 2
(GQA) and 1 (MQA) key/value heads, 3 seeds each, everything else equal; fewer kv heads also
means fewer parameters (2·C·hd per removed kv head and layer), which is part of the trade.
Reported: validation nats (mean ± sd over seeds; short runs, the whole validation split is
scored) against the KV-cache bytes per token 2·L·Hkv·hd·4, predicted and measured.
Ainslie et al. (2023) report GQA close to MHA quality at a fraction of the cache; at this
scale the differences may be within seed noise, and the chapter says which.
Chapter: stage 14, "MHA, MQA, GQA".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.architectures.kv_cache import _measured
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    steps: int = 400
    seeds: tuple[int, ...] = (0, 1, 2)
    n_kv_heads: tuple[int, ...] = (1, 2, 4)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    eval_tokens: int = 20_000


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.recipes.gpt import train_gpt

    rows = []
    for n_kv in config.n_kv_heads:
        runs = []
        for seed in config.seeds:
            r = train_gpt("shakespeare", seed=seed, progress=False, model_overrides=dict(
                d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
                n_kv_heads=n_kv, norm_type="rmsnorm", ffn_type="swiglu",
                positional="rope_halves", ffn_hidden=None),
                train_overrides=dict(max_steps=config.steps, eval_interval=config.steps,
                                     eval_tokens=config.eval_tokens,
                                     warmup_steps=min(100, config.steps // 4)))
            model = r["model"]
            T = model.config.context_length
            runs.append({"seed": seed, "val_nats": r["val_nats"],
                         "n_params": r["config"]["n_parameters"],
                         "measured_bytes_per_token": _measured(model, T) / T,
                         "predicted_bytes_per_token": model.config.kv_cache_bytes_per_token(),
                         "vocab_size": model.config.vocab_size})
        rows.append({"n_kv_heads": n_kv, "runs": runs,
                     "val_nats": mean_sd([x["val_nats"] for x in runs]),
                     "n_params": runs[0]["n_params"],
                     "bytes_per_token": runs[0]["predicted_bytes_per_token"]})
    mha = rows[-1]["val_nats"]["mean"]
    for r in rows:
        r["val_cost_vs_mha"] = r["val_nats"]["mean"] - mha
    return {"rows": rows, "n_heads": config.n_heads, "steps": config.steps}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.6, height=3.4)
    rows = results["rows"]
    x = [r["bytes_per_token"] for r in rows]
    y = [r["val_nats"]["mean"] for r in rows]
    err = [r["val_nats"]["sd"] for r in rows]
    ax.errorbar(x, y, yerr=err, fmt="o-", color=PALETTE[0], capsize=3, lw=1)
    for r, xi, yi in zip(rows, x, y, strict=True):
        name = "MQA" if r["n_kv_heads"] == 1 else "MHA" if r["n_kv_heads"] == results[
            "n_heads"] else "GQA"
        ax.annotate(f"{name} (Hkv={r['n_kv_heads']})", (xi, yi), xytext=(6, 6),
                    textcoords="offset points", fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel("KV cache, bytes per token (float32)")
    n = len(rows[0]["runs"])
    ax.set_ylabel(f"validation nats/char, {results['steps']} steps\n(mean ± sd, {n} seeds)")
    return {"gqa_quality": fig}


def check(results: dict[str, Any]) -> None:
    """The cache prediction holds exactly in every trained model, and every model learned
    (validation below the uniform ln V); the loss differences are reported, not asserted."""
    for r in results["rows"]:
        for x in r["runs"]:
            assert x["measured_bytes_per_token"] == x["predicted_bytes_per_token"]
            assert x["val_nats"] < math.log(x["vocab_size"])


EXPERIMENT = Experiment(
    name="architectures_gqa_quality", stage=14, title="KV heads: cache saved vs loss paid",
    quick=Config(steps=10, seeds=(0,), n_kv_heads=(1, 4), d_model=32, eval_tokens=2000),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"Hkv={x['n_kv_heads']} val", x["val_nats"]) for x in r["rows"]],
)
