"""BatchNorm vs LayerNorm vs RMSNorm vs none on the stage-4 MLP language model (stage 6).

The model is the stage-4 ``MLPLanguageModel`` (3 characters of context, tanh hidden layers,
torch's default Linear init) with a normalization between each hidden Linear and its tanh,
h_l = tanh(Norm(W_l h_{l−1})), trained with AdamW on independent (context, next character)
pairs of the deduplicated names split, at depth 2 (the usual model) and 8 (where the
default init, Var(W) = 1/(3 fan_in), shrinks the signal layer by layer). Quality is the
shared evaluator's validation NLL (nats/char, BatchNorm in eval mode, i.e. with its
running statistics); speed is the 10th-percentile wall time of a training step, and of one
forward+backward of the normalization layer alone; the models train side by side on the
same batches and are timed interleaved, on one thread.

Why not a sequence model: in a language model a row of the batch is one position, and
BatchNorm's μ_B, σ_B mix the activations of every position in the batch — including later
positions of the same sequence, which were computed from the very tokens the model is
asked to predict. Training can exploit that leak; at inference the leak is gone.
Chapter: stage 6 (training stability), "BatchNorm, LayerNorm and RMSNorm on the MLP".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.stability.common import single_thread, spread_labels
from spiral.experiments.stability.models import NORMS, NormedMLP, mlp_config, names_data

LABELS = {"none": "no norm", "batchnorm": "BatchNorm", "layernorm": "LayerNorm",
          "rmsnorm": "RMSNorm"}


@dataclass(frozen=True)
class Config:
    norms: tuple[str, ...] = NORMS
    depths: tuple[int, ...] = (2, 8)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    d_hidden: int = 128
    timing_repeats: int = 200
    seeds: tuple[int, ...] = (0, 1, 2)


def _layer_timings(config: Config, rng: np.random.Generator) -> dict[str, float]:
    """10th-percentile seconds of forward+backward of each norm alone on (batch·8, d_hidden)
    float32, interleaved so that load on the machine hits them alike. On a shared machine the
    median swings with other jobs (we saw one model's step take 1.4 ms and 14 ms); a low
    percentile estimates the unloaded cost."""
    from spiral.autograd import Tensor
    from spiral.experiments.stability.models import make_hidden_norm

    x = rng.standard_normal((config.batch_size * 8, config.d_hidden)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    layers = {n: make_hidden_norm(n, config.d_hidden) for n in config.norms if n != "none"}
    times: dict[str, list[float]] = {n: [] for n in layers}
    for _ in range(config.timing_repeats):
        for name, layer in layers.items():
            xt = Tensor(x, requires_grad=True)
            t0 = time.perf_counter()
            layer(xt).backward(g)
            times[name].append(time.perf_counter() - t0)
    return {n: float(np.percentile(t, 10)) for n, t in times.items()}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.evaluate import evaluate
    from spiral.experiments.stability.models import train_on_contexts

    d = names_data(3)
    out: dict[str, Any] = {"log_v": math.log(d["vocab_size"]), "runs": {}, "curves": {}}
    with single_thread():
        for depth in config.depths:
            acc: dict[str, dict[str, list[Any]]] = {n: {"val": [], "ms": [], "curve": []}
                                                    for n in config.norms}
            for seed in config.seeds:
                r = np.random.default_rng([seed, depth])
                mc = mlp_config(d["vocab_size"], n_layers=depth, d_hidden=config.d_hidden)
                # the same initial weights for every norm (built from one seed each)
                models = [NormedMLP(mc, n, rng=np.random.default_rng([seed, depth, 1]))
                          for n in config.norms]
                traces = train_on_contexts(models, d["x"], d["y"], config.steps,
                                           config.batch_size, config.lr, r)
                k = max(1, config.steps // 50)  # 50 points of a running mean
                for n, model, losses in zip(config.norms, models, traces):
                    acc[n]["val"].append(evaluate(model, d["val_ids"]).nats)
                    acc[n]["ms"].append(1e3 * float(np.percentile(model.step_times, 10)))
                    acc[n]["curve"].append(
                        np.convolve(losses, np.ones(k) / k, "valid")[::k].tolist())
            for n in config.norms:
                key = f"depth{depth}_{n}"
                out["runs"][key] = {"val": mean_sd(acc[n]["val"]),
                                    "step_ms": mean_sd(acc[n]["ms"])}
                out["curves"][key] = np.mean(acc[n]["curve"], 0).tolist()
        layer_s = _layer_timings(config, rng)
    out["layer_ms"] = {k: 1e3 * v for k, v in layer_s.items()}
    rows = []
    for norm in config.norms:
        row = [LABELS[norm]]
        for depth in config.depths:
            v = out["runs"][f"depth{depth}_{norm}"]
            row += [f"{v['val']['mean']:.3f} ± {v['val']['sd']:.3f}",
                    f"{v['step_ms']['mean']:.2f}"]
        row.append(f"{out['layer_ms'][norm]:.3f}" if norm in out["layer_ms"] else "–")
        rows.append(row)
    cols = ["normalization"]
    for depth in config.depths:
        cols += [f"val nats, {depth} layers", f"ms/step, {depth} layers"]
    cols.append(f"norm fwd+bwd ms ({config.batch_size * 8}×{config.d_hidden})")
    out["table"] = {"columns": cols, "rows": rows}
    out["steps"] = config.steps
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    depths = sorted({int(k.split("_")[0][5:]) for k in results["curves"]})
    fig, axes = new_figure(1, len(depths), width=4.5 * len(depths), height=3.6, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, depth in zip(axes, depths):
        ends = []
        for i, norm in enumerate(LABELS):
            y = results["curves"].get(f"depth{depth}_{norm}")
            if y is None:
                continue
            x = np.linspace(0, results["steps"], len(y)).tolist()
            ax.plot(x, y, color=PALETTE[i])
            ends.append((x[-1], y[-1], LABELS[norm], PALETTE[i]))
        spread_labels(ax, ends)
        ax.set_title(f"{depth} hidden layers")
        ax.set_xlabel("step")
    axes[0].set_ylabel("training loss (nats, running mean)")
    return {"norm_comparison": fig}


def check(results: dict[str, Any]) -> None:
    runs = results["runs"]
    deep = max(int(k.split("_")[0][5:]) for k in runs)
    # deep tanh stack with torch's default init: the unnormalized net stalls, BatchNorm
    # (which re-standardizes every layer) trains clearly better
    assert runs[f"depth{deep}_batchnorm"]["val"]["mean"] < \
        runs[f"depth{deep}_none"]["val"]["mean"] - 0.1, runs
    for key, r in runs.items():  # every model learned something
        assert r["val"]["mean"] < results["log_v"] - 0.3, (key, r)


EXPERIMENT = Experiment(
    name="stability_norm_comparison", stage=6, title="BatchNorm vs LayerNorm vs RMSNorm",
    quick=Config(norms=("none", "batchnorm", "rmsnorm"), depths=(8,), steps=250,
                 timing_repeats=20, seeds=(0,)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"val {v['val']['mean']:.3f}, {v['step_ms']['mean']:.2f} ms/step")
                       for k, v in r["runs"].items()],
    description="validation NLL and step time of the MLP LM with each normalization",
)
