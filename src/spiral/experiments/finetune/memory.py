"""Training memory per fine-tuning method: the derivation against stage 11's profiler.

For the base's architecture, one AdamW training step of full fine-tuning, freezing (the
embeddings and the lower half of the blocks), LoRA (r = 8 on every attention and FFN
projection) and QLoRA (the same adapters on an NF4 base) is predicted by
:func:`spiral.finetune.memory.predict_finetune_memory` (stage 11's graph, rewritten for the
method) and measured by :func:`spiral.finetune.memory.profile_finetune_step` (stage 11's
allocation profiler), at two batch shapes: the fine-tuning batch, where activations dominate,
and a single short sequence, where weights, gradients and optimizer state do. Target: every
prediction within 5 % of the measurement. Chapter: stage 15, "What each method costs".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.finetune.common import STANDIN, base_path
from spiral.experiments.framework import Experiment
from spiral.finetune.memory import METHODS, predict_finetune_memory, profile_finetune_step
from spiral.finetune.recipe import FinetuneConfig, apply_method, load_base, make_optimizer
from spiral.plotting import PALETTE, new_figure

TERMS = ("params", "grads", "optimizer_state", "activations", "in_flight", "inputs")


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    shapes: tuple[tuple[int, int], ...] = ((16, 64), (1, 64))  # (batch, sequence length)
    r: int = 8
    freeze_blocks: int = 3


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"shapes": [list(s) for s in config.shapes], "by_shape": {}}
    for B, T in config.shapes:
        rows: dict[str, Any] = {}
        for method in METHODS:
            b = load_base(base_path(config.base))
            cfg = FinetuneConfig(method, r=config.r, freeze_blocks=config.freeze_blocks)
            info = apply_method(b.model, cfg, np.random.default_rng(0))
            opt = make_optimizer(b.model, cfg, 1e-4, 0.0)
            ids = np.random.default_rng(1).integers(0, b.model.config.vocab_size, (B, T + 1))
            measured = profile_finetune_step(b.model, (ids[:, :-1], ids[:, 1:]), opt)
            pred = predict_finetune_memory(b.model.config, B, T, method, config.r,
                                           freeze_blocks=config.freeze_blocks)
            rows[method] = {"measured": measured.peak, "predicted": pred.peak_visible,
                            "error": pred.peak_visible / measured.peak - 1,
                            "terms": {t: getattr(pred, t) for t in TERMS},
                            "measured_by_tag": measured.peak_by_tag,
                            "peak_at": pred.peak_at, "trainable": info["trainable"]}
        out["by_shape"][f"{B}x{T}"] = rows
    errors = [abs(v["error"]) for rows in out["by_shape"].values() for v in rows.values()]
    out["max_abs_error"] = max(errors)
    out["table"] = {"columns": ["batch × length", "method", "trainable", "predicted (MiB)",
                                "measured (MiB)", "error", "weights (MiB)",
                                "grads + AdamW (MiB)", "activations (MiB)"],
                    "rows": [[k, m, v["trainable"], f"{v['predicted'] / 2**20:.2f}",
                              f"{v['measured'] / 2**20:.2f}", f"{100 * v['error']:+.2f} %",
                              f"{v['terms']['params'] / 2**20:.2f}",
                              f"{_mib(v['terms']['grads'] + v['terms']['optimizer_state'])}",
                              f"{v['terms']['activations'] / 2**20:.2f}"]
                             for k, rows in out["by_shape"].items() for m, v in rows.items()]}
    return out


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def plot(results: dict[str, Any]) -> dict[str, Any]:
    shapes = list(results["by_shape"])
    fig, axes = new_figure(ncols=len(shapes), width=3.2 * len(shapes), height=3.2)
    axes = np.atleast_1d(axes)
    labels = {"params": "weights", "grads": "gradients", "optimizer_state": "AdamW state",
              "activations": "activations", "in_flight": "gradients in flight",
              "inputs": "batch"}
    for ax, shape in zip(axes, shapes):
        rows = results["by_shape"][shape]
        x = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        for i, t in enumerate(TERMS):
            h = np.array([v["terms"][t] for v in rows.values()]) / 2**20
            ax.bar(x, h, bottom=bottom, color=PALETTE[i], width=0.6, label=labels[t])
            bottom += h
        ax.plot(x, [v["measured"] / 2**20 for v in rows.values()], "k_", ms=22, mew=2,
                label="measured (profiler)")
        ax.set_xticks(x, list(rows))
        ax.set_title(f"batch × length = {shape.replace('x', ' × ')}", fontsize=8)
        ax.set_ylabel("peak memory of a step (MiB)")
    axes[-1].legend(fontsize=6, frameon=False)
    return {"finetune_memory": fig}


def check(results: dict[str, Any]) -> None:
    assert results["max_abs_error"] < 0.05, results["max_abs_error"]
    for rows in results["by_shape"].values():
        assert rows["qlora"]["terms"]["params"] < rows["lora"]["terms"]["params"]
        assert rows["lora"]["terms"]["optimizer_state"] < rows["full"]["terms"]["optimizer_state"]
        assert rows["qlora"]["measured"] < rows["lora"]["measured"]


EXPERIMENT = Experiment(
    name="finetune_memory", stage=15, title="Training memory of each method, derived and measured",
    quick=replace(Config(), base=STANDIN, shapes=((4, 32), (1, 8)), r=4, freeze_blocks=1),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("largest |predicted − measured| / measured", r["max_abs_error"])],
)
