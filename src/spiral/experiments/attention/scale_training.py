"""Training the attention language model with and without the 1/√d scale; the gain over the
stage-4 MLP's fixed window, and what window one head is worth.

Same data (tiny Shakespeare, characters), same recipe apart from the learning rate
(:class:`attention_common.Recipe`), same evaluator (mean NLL over every validation position
in windows of 64):

* attention LM, d_model = head_dim = 64, context 64, logits ÷ √64 (the default);
* the same model with the logits not divided (``scale=False``);
* stage 4's MLP with its default fixed window of 8 characters (the model attention replaces),
  and with windows of 1–4 characters, to read off what window the attention model matches.

Each of the three main models gets its own learning rate, chosen from ``lrs`` on the tune
split (the last 10 % of the training region, seed 0); the narrower MLPs reuse the window-8
choice. Then three seeds train on the whole training region and the validation split is
scored once. Besides the loss we probe what the scale changes inside: the sd of the
attention logits and the entropy of the attention rows at initialisation and after training.
Chapter: stage 7 ("Does the scale matter in training?", "What attention buys over a window").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.attention.common import (
    Recipe,
    attention_lm,
    attention_probe,
    fit,
    mlp_lm,
    shakespeare,
)
from spiral.experiments.framework import Experiment, mean_sd
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    d_model: int = 64
    context_length: int = 64
    recipe: Recipe = Recipe()
    lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1)  # tuned per model on the tune split
    mlp: bool = True
    mlp_windows: tuple[int, ...] = (1, 2, 3, 4)  # extra MLP windows (window 8 is the baseline)
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
    T = config.context_length
    makers: dict[str, Callable[[int], Any]] = {
        "scaled": lambda s: attention_lm(s, d_model=config.d_model, context_length=T, scale=True),
        "unscaled": lambda s: attention_lm(s, d_model=config.d_model, context_length=T,
                                           scale=False),
    }
    if config.mlp:
        makers["mlp"] = lambda s: mlp_lm(s, context_length=T)
    # 1. the learning rate of each model, on the tune split (seed 0)
    tune: dict[str, list[float]] = {}
    best_lr: dict[str, float] = {}
    for name, make in makers.items():
        tune[name] = [fit(make(config.seeds[0]), replace(config.recipe, lr=lr), config.seeds[0],
                          tune=True)["val_nats"] for lr in config.lrs]
        best_lr[name] = config.lrs[int(np.argmin(tune[name]))]
    # 2. three seeds at that rate, scored once on validation
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in makers}
    n_params = {}
    for seed in config.seeds:
        for name, make in makers.items():
            m = make(seed)
            n_params[name] = m.num_parameters()
            init = attention_probe(m, probe) if name != "mlp" else None
            r = fit(m, replace(config.recipe, lr=best_lr[name]), seed)
            rec = {"val_nats": r["val_nats"], "seconds": r["seconds"], "history": r["history"]}
            if name != "mlp":
                rec.update(init=init, trained=attention_probe(m, probe))
            runs[name].append(rec)
    val = {k: mean_sd([r["val_nats"] for r in v]) for k, v in runs.items()}
    diff = mean_sd([u["val_nats"] - s["val_nats"]
                    for s, u in zip(runs["scaled"], runs["unscaled"], strict=True)])
    out: dict[str, Any] = {"runs": runs, "val": val, "unscaled_minus_scaled": diff,
                           "n_params": n_params, "steps": config.recipe.max_steps,
                           "lrs": list(config.lrs), "tune_nats": tune, "best_lr": best_lr}
    for key in ("logit_sd", "entropy", "max_weight"):
        for name in ("scaled", "unscaled"):
            for when in ("init", "trained"):
                out.setdefault(key, {})[f"{name}_{when}"] = mean_sd(
                    [r[when][key] for r in runs[name]])
    labels = {"scaled": "attention, logits ÷ √d", "unscaled": "attention, no scale",
              "mlp": "MLP, fixed window of 8 (stage 4)"}
    rows: list[list[Any]] = [[labels[k], f"{n_params[k]:,}", f"{best_lr[k]:g}", val[k]]
                             for k in makers]
    if config.mlp:
        out["gain_over_mlp"] = mean_sd([m["val_nats"] - s["val_nats"]
                                        for s, m in zip(runs["scaled"], runs["mlp"],
                                                        strict=True)])
        windows = {}
        for w in config.mlp_windows:
            vals = [fit(mlp_lm(seed, context_length=T, n_context=w),
                        replace(config.recipe, lr=best_lr["mlp"]), seed)["val_nats"]
                    for seed in config.seeds]
            windows[str(w)] = mean_sd(vals)
        windows["8"] = val["mlp"]
        out["mlp_windows"] = windows
        # the widest MLP window that the attention model still beats (0 = none)
        beaten = [int(w) for w, v in windows.items() if v["mean"] > val["scaled"]["mean"]]
        out["attention_beats_mlp_up_to_window"] = max(beaten) if beaten else 0
        out["window_table"] = {
            "columns": ["model", "characters it can read", "validation nats/char"],
            "rows": [[f"MLP, window {w}", w, windows[w]] for w in sorted(windows, key=int)]
            + [["attention, one head", T, val["scaled"]]]}
    out["table"] = {"columns": ["model", "parameters", "learning rate (tuned)",
                                "validation nats/char (mean ± sd)", "bits/char"],
                    "rows": [[a, b, c, f"{v['mean']:.3f} ± {v['sd']:.3f}",
                              f"{v['mean'] / np.log(2):.3f}"] for a, b, c, v in rows]}
    out["tune_table"] = {"columns": ["learning rate"] + [labels[k] for k in makers],
                         "rows": [[f"{lr:g}"] + [f"{tune[k][i]:.3f}" for k in makers]
                                  for i, lr in enumerate(config.lrs)]}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=5.8, height=3.4)
    colors = {"scaled": PALETTE[0], "unscaled": PALETTE[1], "mlp": PALETTE[2]}
    labels = {"scaled": "attention ÷ √d", "unscaled": "attention, no scale",
              "mlp": "MLP, window 8"}
    for name, runs in results["runs"].items():
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
                 lrs=(1e-2,), recipe=replace(Recipe(), max_steps=120, batch_size=8, seq_len=32,
                                             warmup_steps=10, val_tokens=4096)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("val scaled", r["val"]["scaled"]["mean"]),
                       ("val unscaled", r["val"]["unscaled"]["mean"]),
                       ("gain over MLP", r.get("gain_over_mlp", {}).get("mean")),
                       ("lrs", r["best_lr"])],
)
