"""BatchNorm's running statistics during training, and the train/eval gap (stage 6).

In training BatchNorm normalizes with the statistics of the current batch; in evaluation
with running averages r ← (1 − m) r + m · stat_B (m = ``momentum``, torch's 0.1 by default).
The average chases a moving target — the pre-activations' distribution changes as the
weights train — so it lags by about 1/m steps, and it averages batch noise over about 2/m
batches. We train the stage-4 MLP language model with BatchNorm after each hidden layer on
names and record, every few steps, for the first BatchNorm layer:

- its running mean/variance against the statistics of the current weights on 4,096 held-out
  contexts (the quantity the running averages estimate);
- the held-out loss in train mode (batch statistics of held-out batches of the training
  batch size) and in eval mode (running statistics): the train/eval gap.

Chapter: stage 6 (training stability), "BatchNorm's running statistics".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import no_grad
from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.stability.common import single_thread
from spiral.experiments.stability.models import NormedMLP, mlp_config, names_data
from spiral.nn import functional as F
from spiral.nn.norm import BatchNorm1d, running_stats_frozen


@dataclass(frozen=True)
class Config:
    momenta: tuple[float, ...] = (0.1, 0.01)
    steps: int = 1500
    record_every: int = 25
    batch_size: int = 32
    lr: float = 3e-3
    n_probe: int = 4096
    channels: int = 4  # channels drawn in the figure
    seeds: tuple[int, ...] = (0, 1, 2)


def _probe(model: NormedMLP, px: np.ndarray, py: np.ndarray, batch: int) -> dict[str, Any]:
    bn = model.norms[0]
    assert isinstance(bn, BatchNorm1d)
    with no_grad():
        # every train-mode forward of held-out data leaves the running averages alone (they
        # once absorbed the 4,096 probe contexts here, biasing run_mean toward pop_mean)
        with running_stats_frozen(model):
            a1 = model.hidden_from_contexts(px)[0].data  # (N, d_hidden) pre-norm of layer 1
            losses = [float(F.cross_entropy(model.context_logits(px[i:i + batch]),
                                            py[i:i + batch]).item())
                      for i in range(0, len(px) - batch + 1, batch)]
        model.eval()
        eval_loss = float(F.cross_entropy(model.context_logits(px), py).item())
        model.train()
    return {
        "pop_mean": a1.mean(0), "pop_var": a1.var(0, ddof=1),
        "run_mean": bn.running_mean.copy(), "run_var": bn.running_var.copy(),
        "eval_loss": eval_loss, "train_mode_loss": float(np.mean(losses)),
    }


def _one(momentum: float, config: Config, seed: int) -> dict[str, Any]:
    from spiral.experiments.stability.models import train_on_contexts

    d = names_data(3)
    rng = np.random.default_rng([seed, 7])
    # held-out contexts: the last n_probe pairs of the training stream, never trained on
    px, py = d["x"][-config.n_probe:], d["y"][-config.n_probe:]
    tx, ty = d["x"][:-config.n_probe], d["y"][:-config.n_probe]
    model = NormedMLP(mlp_config(d["vocab_size"], n_layers=2), "batchnorm", rng=rng)
    for m in model.norms:
        if isinstance(m, BatchNorm1d):
            m.momentum = momentum
    records: list[dict[str, Any]] = []

    def record(step: int, models: list[NormedMLP]) -> None:
        if step % config.record_every == 0:
            r = _probe(models[0], px, py, config.batch_size)
            r["step"] = step
            records.append(r)

    train_on_contexts([model], tx, ty, config.steps, config.batch_size, config.lr, rng,
                      callback=record)
    c = config.channels
    scale = np.sqrt(np.mean([r["pop_var"] for r in records], 0))  # per-channel typical std
    return {
        "steps": [r["step"] for r in records],
        "pop_mean": [r["pop_mean"][:c].tolist() for r in records],
        "run_mean": [r["run_mean"][:c].tolist() for r in records],
        "pop_var": [r["pop_var"][:c].tolist() for r in records],
        "run_var": [r["run_var"][:c].tolist() for r in records],
        "mean_err": [float(np.mean(np.abs(r["run_mean"] - r["pop_mean"]) / scale))
                     for r in records],
        "var_err": [float(np.mean(np.abs(np.log(r["run_var"] / r["pop_var"]))))
                    for r in records],
        "eval_loss": [r["eval_loss"] for r in records],
        "train_mode_loss": [r["train_mode_loss"] for r in records],
    }


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"by_momentum": {}}
    rows = []
    with single_thread():
        for mom in config.momenta:
            runs = [_one(mom, config, s) for s in config.seeds]
            key = f"m{mom:g}".replace(".", "_")
            gap = [np.array(r["eval_loss"]) - np.array(r["train_mode_loss"]) for r in runs]
            entry = {
                "momentum": mom, "trace": runs[0], "steps": runs[0]["steps"],
                "mean_err": np.mean([r["mean_err"] for r in runs], 0).tolist(),
                "var_err": np.mean([r["var_err"] for r in runs], 0).tolist(),
                "gap": np.mean(gap, 0).tolist(),
                "first_gap": mean_sd([g[0] for g in gap]),
                "final_gap": mean_sd([g[-1] for g in gap]),
                "final_mean_err": mean_sd([r["mean_err"][-1] for r in runs]),
                "final_var_err": mean_sd([r["var_err"][-1] for r in runs]),
                "final_eval": mean_sd([r["eval_loss"][-1] for r in runs]),
            }
            out["by_momentum"][key] = entry
            rows.append([f"{mom:g}", f"{entry['first_gap']['mean']:+.3f}",
                         f"{entry['final_gap']['mean']:+.3f} ± {entry['final_gap']['sd']:.3f}",
                         f"{entry['final_mean_err']['mean']:.3f}",
                         f"{entry['final_var_err']['mean']:.3f}",
                         f"{entry['final_eval']['mean']:.3f}"])
    out["table"] = {"columns": ["momentum", f"eval − train-mode loss at step {config.record_every}",
                                f"… at step {config.steps}", "running-mean error (in stds)",
                                "running-var error (abs. log ratio)",
                                "held-out loss (eval mode)"],
                    "rows": rows}
    out["record_every"], out["batch_size"] = config.record_every, config.batch_size
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    figs = {}
    fig, axes = new_figure(1, 2, width=9.0, height=3.4)
    entry = next(iter(results["by_momentum"].values()))
    t = entry["trace"]
    steps = t["steps"]
    for c in range(len(t["pop_mean"][0])):
        axes[0].plot(steps, [v[c] for v in t["pop_mean"]], color=PALETTE[c], lw=0.8, ls="--")
        y = [v[c] for v in t["run_mean"]]
        axes[0].plot(steps, y, color=PALETTE[c])
        direct_label(axes[0], steps, y, f"channel {c}", color=PALETTE[c])
    axes[0].set_title(f"running mean (solid) vs true mean (dashed), m = {entry['momentum']:g}")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("pre-activation mean")
    for i, e in enumerate(results["by_momentum"].values()):
        axes[1].plot(e["steps"], e["mean_err"], color=PALETTE[i])
        direct_label(axes[1], e["steps"], e["mean_err"], f"m = {e['momentum']:g}",
                     color=PALETTE[i])
    axes[1].set_yscale("log")
    axes[1].set_title("error of the running mean")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("|running − true| / std (mean over channels)")
    figs["running_stats"] = fig
    fig, ax = new_figure(width=6.4, height=3.4)
    for i, e in enumerate(results["by_momentum"].values()):
        ax.plot(e["steps"], e["gap"], color=PALETTE[i])
        direct_label(ax, e["steps"], e["gap"], f"m = {e['momentum']:g}", color=PALETTE[i])
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out loss: eval − train mode (nats)")
    figs["train_eval_gap"] = fig
    return figs


def check(results: dict[str, Any]) -> None:
    by = results["by_momentum"]
    fast, slow = by["m0_1"], by["m0_01"]
    # both averages end close to the true statistics (within a quarter of a std)
    for e in (fast, slow):
        assert e["final_mean_err"]["mean"] < 0.25, e["final_mean_err"]
    # lag: early in training the slow average (m = 0.01, a memory of ~100 steps) is far
    # behind the fast one (m = 0.1), in mean and in variance ...
    assert slow["mean_err"][0] > 2 * fast["mean_err"][0], (slow["mean_err"][0], fast["mean_err"][0])
    assert slow["var_err"][0] > 2 * fast["var_err"][0], (slow["var_err"][0], fast["var_err"][0])
    # ... so eval mode is clearly worse than train mode there
    assert slow["first_gap"]["mean"] > 2 * fast["first_gap"]["mean"], (slow["first_gap"],
                                                                      fast["first_gap"])
    assert slow["first_gap"]["mean"] > 0.02, slow["first_gap"]


EXPERIMENT = Experiment(
    name="stability_batchnorm_stats", stage=6, title="BatchNorm running statistics",
    quick=Config(steps=150, seeds=(0,), n_probe=1024), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"final gap {v['final_gap']['mean']:+.3f}") for k, v in
                       r["by_momentum"].items()],
    description="running mean/var vs the true statistics, eval vs train-mode loss",
)
