"""Training the attention language model with and without the 1/√d scale; the gain over the
stage-4 MLP's fixed window.

Same data (tiny Shakespeare, characters), same recipe (:class:`attention_common.Recipe`),
same evaluator (mean NLL over every validation position in windows of 64), three seeds:

* attention LM, d_model = head_dim = 64, context 64, logits ÷ √64 (the default);
* the same model with the logits not divided (``scale=False``);
* stage 4's MLP with its default fixed window of 8 characters (the model attention replaces).

Besides the validation loss we probe what the scale changes inside: the sd of the attention
logits and the entropy of the attention rows at initialisation and after training.
Chapter: stage 7 ("Does the scale matter in training?", "What attention buys over a window").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.attention_common import (
    Recipe,
    attention_lm,
    attention_probe,
    fit,
    mlp_lm,
    shakespeare,
)
from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.style import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    d_model: int = 64
    context_length: int = 64
    recipe: Recipe = Recipe()
    mlp: bool = True
    probe_windows: int = 64


def _probe_windows(config: Config) -> np.ndarray:
    _, _, val = shakespeare()
    T = config.context_length
    n = config.probe_windows
    return val[: n * T].reshape(n, T)  # (n, T): the first n validation windows


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # small matmuls: one thread is faster
        return _run(config)


def _run(config: Config) -> dict[str, Any]:
    probe = _probe_windows(config)
    runs: dict[str, list[dict[str, Any]]] = {"scaled": [], "unscaled": [], "mlp": []}
    n_params = {}
    for seed in config.seeds:
        for name, scale in (("scaled", True), ("unscaled", False)):
            m = attention_lm(seed, d_model=config.d_model, context_length=config.context_length,
                             scale=scale)
            n_params[name] = m.num_parameters()
            init = attention_probe(m, probe)
            r = fit(m, config.recipe, seed)
            runs[name].append({"val_nats": r["val_nats"], "seconds": r["seconds"],
                               "history": r["history"], "init": init,
                               "trained": attention_probe(m, probe)})
        if config.mlp:
            m = mlp_lm(seed, context_length=config.context_length)
            n_params["mlp"] = m.num_parameters()
            r = fit(m, config.recipe, seed)
            runs["mlp"].append({"val_nats": r["val_nats"], "seconds": r["seconds"],
                                "history": r["history"]})
    val = {k: mean_sd([r["val_nats"] for r in v]) for k, v in runs.items() if v}
    diff = mean_sd([u["val_nats"] - s["val_nats"]
                    for s, u in zip(runs["scaled"], runs["unscaled"], strict=True)])
    out: dict[str, Any] = {"runs": runs, "val": val, "unscaled_minus_scaled": diff,
                           "n_params": n_params, "steps": config.recipe.max_steps}
    for key in ("logit_sd", "entropy", "max_weight"):
        for name in ("scaled", "unscaled"):
            for when in ("init", "trained"):
                out.setdefault(key, {})[f"{name}_{when}"] = mean_sd(
                    [r[when][key] for r in runs[name]])
    rows: list[list[Any]] = [["attention, logits ÷ √d", f"{n_params['scaled']:,}", val["scaled"]],
            ["attention, no scale", f"{n_params['unscaled']:,}", val["unscaled"]]]
    if runs["mlp"]:
        out["gain_over_mlp"] = mean_sd([m["val_nats"] - s["val_nats"]
                                        for s, m in zip(runs["scaled"], runs["mlp"],
                                                        strict=True)])
        rows.append(["MLP, fixed window of 8 (stage 4)", f"{n_params['mlp']:,}", val["mlp"]])
    out["table"] = {"columns": ["model", "parameters", "validation nats/char (mean ± sd)",
                                "bits/char"],
                    "rows": [[a, b, f"{v['mean']:.3f} ± {v['sd']:.3f}",
                              f"{v['mean'] / np.log(2):.3f}"] for a, b, v in rows]}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.8, height=3.4)
    colors = {"scaled": PALETTE[0], "unscaled": PALETTE[1], "mlp": PALETTE[2]}
    labels = {"scaled": "attention ÷ √d", "unscaled": "attention, no scale",
              "mlp": "MLP, window 8"}
    for name, runs in results["runs"].items():
        if not runs:
            continue
        steps = [h["step"] for h in runs[0]["history"]]
        curves = np.array([[h["val_loss"] for h in r["history"]] for r in runs])
        mean = curves.mean(0)
        ax.fill_between(steps, curves.min(0), curves.max(0), color=colors[name], alpha=0.15,
                        lw=0)
        ax.plot(steps, mean, color=colors[name], lw=1.4)
        direct_label(ax, steps, list(mean), labels[name], color=colors[name],
                     dy={"scaled": -5, "unscaled": 5, "mlp": 0}[name])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_xlim(right=ax.get_xlim()[1] * 1.3)
    return {"training_curves": fig}


def check(results: dict[str, Any]) -> None:
    v = results["val"]
    # the model learns: far below the uniform guess over 65 characters (4.17 nats)
    assert v["scaled"]["mean"] < 3.0
    # the unscaled logits start wider: sd about √d times the scaled one at init
    sd = results["logit_sd"]
    assert sd["unscaled_init"]["mean"] > 4 * sd["scaled_init"]["mean"]
    # and the unscaled rows are more peaked (lower entropy) at init
    ent = results["entropy"]
    assert ent["unscaled_init"]["mean"] < ent["scaled_init"]["mean"]


EXPERIMENT = Experiment(
    name="attention_scale_training", stage=7, title="Training with and without √d",
    quick=Config(seeds=(0,), d_model=32, context_length=32, mlp=False, probe_windows=16,
                 recipe=replace(Recipe(), max_steps=120, batch_size=8, seq_len=32,
                                warmup_steps=10, val_tokens=4096)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("val scaled", r["val"]["scaled"]["mean"]),
                       ("val unscaled", r["val"]["unscaled"]["mean"]),
                       ("gain over MLP", r.get("gain_over_mlp", {}).get("mean"))],
)
