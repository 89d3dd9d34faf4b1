"""The softmax-layer initialization fix: start at loss log V, not above it (stage 6).

Before training, a model that knows nothing should predict the uniform distribution over
the V tokens, whose cross-entropy is exactly log V. If the initial logits are independent of
the target with standard deviation s, E[loss] = E[logsumexp z] − E[z_y] ≈ log(V e^{s²/2}) =
log V + s²/2 for large V and small s (and ≈ s·√(2 log V) once s is large). A readout drawn
N(0, 1) on d = 200 hidden features gives s ≈ √d·σ_h ≈ 10 and an initial loss many times
log V; the model then spends its first steps only shrinking the logits (the "hockey stick").
Scaling W_out towards zero (and zeroing b_out) removes that phase.

We take the stage-4 ``MLPLanguageModel`` on the names split with four readouts — N(0, 1)
("randn", where makemore's lecture starts), torch's default Linear init, that × 0.1 (stage
4's default) and zero — measure the logit std and the validation loss at step 0 against
log V + s²/2, and train each with the stage-4 loop (``spiral.train``) to compare the first
steps and the final validation loss.
Chapter: stage 6 (training stability), "The softmax layer: start at log V".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import no_grad
from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.stability.common import single_thread
from spiral.experiments.stability.models import mlp_config, names_data

READOUTS = ("randn", "default", "default_x0.1", "zero")
LABELS = {"randn": "N(0, 1)", "default": "torch default", "default_x0.1": "default × 0.1",
          "zero": "zero"}


@dataclass(frozen=True)
class Config:
    readouts: tuple[str, ...] = READOUTS
    max_steps: int = 1500
    batch_size: int = 32
    seq_len: int = 16
    eval_interval: int = 25
    d_hidden: int = 200
    hidden_gain: float = 1.0  # extra factor on the hidden layer's weights (1 = torch default)
    seeds: tuple[int, ...] = (0, 1, 2)


def _one(readout: str, config: Config, seed: int) -> dict[str, Any]:
    from spiral import train as T
    from spiral.evaluate import evaluate
    from spiral.models.mlp import MLPLanguageModel
    from spiral.nn import Linear, init
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW

    d = names_data(3)
    scale = {"randn": 1.0, "default": 1.0, "default_x0.1": 0.1, "zero": 0.0}[readout]
    mc = mlp_config(d["vocab_size"], d_hidden=config.d_hidden, n_layers=1,
                    head_init_scale=scale)
    rng = np.random.default_rng(seed)
    model = MLPLanguageModel(mc, rng=rng)
    for layer in model.hidden:
        assert isinstance(layer, Linear)
        layer.weight.data *= config.hidden_gain
    if readout == "randn":
        init.normal_(model.head.weight, generator=rng)
        init.normal_(model.head.bias, generator=rng)  # type: ignore[type-var]
    initial = evaluate(model, d["val_ids"]).nats
    with no_grad():
        logits = model(d["val_ids"][None, :2000]).data  # (1, 2000, V)
    logit_std = float(logits.std(axis=-1).mean())  # spread across the V logits of a position
    train_ids = d["train_ids"]
    out: dict[str, Any] = {"initial": float(initial), "logit_std": logit_std, "curve": [],
                           "final": float("nan")}
    if config.max_steps:
        tc = T.TrainConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                           seq_len=config.seq_len, eval_interval=config.eval_interval,
                           eval_tokens=2000, progress=False, seed=seed)
        opt = AdamW(param_groups(model, tc.weight_decay), lr=tc.lr)
        state = T.train(model, opt, train_ids, d["val_ids"], tc, rng)
        out["curve"] = [[h["step"], h["train_loss"]] for h in state.history]
        out["final"] = float(state.history[-1]["val_loss"])
    return out


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    vocab = names_data(3)["vocab_size"]
    res: dict[str, Any] = {"log_v": math.log(vocab), "vocab_size": vocab, "by_readout": {}}
    rows = []
    with single_thread():
        for readout in config.readouts:
            runs = [_one(readout, config, s) for s in config.seeds]
            key = readout.replace(".", "")
            s2 = [r["logit_std"] ** 2 / 2 for r in runs]
            entry: dict[str, Any] = {"label": LABELS[readout],
                                     "initial": mean_sd([r["initial"] for r in runs]),
                                     "logit_std": mean_sd([r["logit_std"] for r in runs]),
                                     "excess": mean_sd([r["initial"] - res["log_v"]
                                                        for r in runs]),
                                     "half_s2": mean_sd(s2)}
            if config.max_steps:
                steps = [c[0] for c in runs[0]["curve"]]
                entry["curve_steps"] = steps
                entry["curve"] = np.mean([[c[1] for c in r["curve"]] for r in runs], 0).tolist()
                entry["first_interval"] = mean_sd([r["curve"][0][1] for r in runs])
                entry["final_val"] = mean_sd([r["final"] for r in runs])
            res["by_readout"][key] = entry
            rows.append([LABELS[readout], f"{entry['logit_std']['mean']:.3g}",
                         f"{entry['initial']['mean']:.3f}", f"{entry['excess']['mean']:+.3f}",
                         f"{entry['half_s2']['mean']:.3f}",
                         f"{entry['first_interval']['mean']:.3f}" if config.max_steps else "–",
                         (f"{entry['final_val']['mean']:.3f} ± {entry['final_val']['sd']:.3f}"
                          if config.max_steps else "–")])
    res["table"] = {"columns": ["readout init", "logit std s", "val loss at step 0 (nats)",
                                "minus log V", "s²/2",
                                f"mean train loss, steps 1–{config.eval_interval}",
                                f"val loss after {config.max_steps} steps"],
                    "rows": rows}
    return res


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from spiral.plotting import PALETTE, direct_label, new_figure

    # left: every readout on a log loss axis; right: the three tame readouts, zoomed in on a
    # linear axis (their curves overlap on the left, so they get a legend there instead)
    fig, (ax_all, ax_zoom) = new_figure(1, 2, width=8.4, height=3.4)
    for i, (key, entry) in enumerate(results["by_readout"].items()):
        if "curve" not in entry:
            continue
        x = [0, *entry["curve_steps"]]
        y = [entry["initial"]["mean"], *entry["curve"]]
        ax_all.plot(x, y, color=PALETTE[i], label=entry["label"])
        if key == "randn":
            direct_label(ax_all, x, y, entry["label"], color=PALETTE[i], dy=6)
        else:
            ax_zoom.plot(x, y, color=PALETTE[i], label=entry["label"])
    for ax in (ax_all, ax_zoom):
        ax.axhline(results["log_v"], color="#999999", lw=0.8, ls="--")
        ax.text(0.98, results["log_v"], "log V", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=8, color="#666666")
        ax.set_xscale("symlog", linthresh=50)
        ax.set_xlim(left=0)
        ax.set_xlabel("training step (linear to 50, then log)")
    ax_all.set_yscale("log")
    ax_all.set_yticks([2, 3, 5, 10])
    ax_all.yaxis.set_major_formatter(ScalarFormatter())
    ax_all.yaxis.set_minor_formatter(NullFormatter())
    ax_all.set_ylabel("loss (nats, log scale)")
    ax_all.set_title("all four readouts")
    ax_zoom.set_ylabel("loss (nats)")
    ax_zoom.set_title("the three small readouts, zoomed")
    ax_zoom.legend(loc="lower left", fontsize=8)
    return {"softmax_init": fig}


def check(results: dict[str, Any]) -> None:
    log_v = results["log_v"]
    by = results["by_readout"]
    # a zero readout predicts exactly uniform: the loss is log V to rounding
    assert abs(by["zero"]["initial"]["mean"] - log_v) < 1e-4, by["zero"]
    # small logits: the excess over log V is small and shrinks with s (s²/2 is the
    # target-independent approximation; the hidden features already correlate with the
    # target, so we bound the excess rather than match it)
    assert by["default"]["excess"]["mean"] < 0.15, by["default"]
    assert abs(by["default_x01"]["excess"]["mean"]) < 0.01, by["default_x01"]
    # N(0, 1) weights on 200 features: logits of std ~10 and a loss several times log V
    assert by["randn"]["logit_std"]["mean"] > 5
    assert by["randn"]["initial"]["mean"] > 3 * log_v
    if "first_interval" in by["randn"]:  # the wasted early steps show in the training loss
        assert by["randn"]["first_interval"]["mean"] > by["default_x01"]["first_interval"]["mean"]


EXPERIMENT = Experiment(
    name="stability_softmax_init", stage=6, title="The softmax-layer initialization fix",
    quick=Config(max_steps=25, eval_interval=25, seeds=(0,)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"initial {v['initial']['mean']:.3f} (log V {r['log_v']:.3f})")
                       for k, v in r["by_readout"].items()],
    description="initial loss vs log V + s²/2 and the first steps, by readout init",
)
