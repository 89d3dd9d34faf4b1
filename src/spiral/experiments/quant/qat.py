"""Quantization-aware training at low bits against post-training RTN.

From the same float model: (1) RTN to ``bits`` bits per channel; (2) QAT: fake-quantize
every Linear (straight-through estimator), fine-tune ``steps`` steps on the training
split, convert to real INT``bits`` layers; (3) the control that separates "quantization-
aware" from "trained longer": fine-tune the float model the same steps on the same
batches, then RTN. All scored by the shared evaluator on the validation split; QAT and the
control are mean ± sd over data-order seeds. The curve is the fake-quantized model's
validation loss during QAT (on the first ``curve_tokens`` validation tokens). Both
fine-tunes use AdamW without weight decay and a cosine decay from ``lr`` to lr/10.
Chapter: stage 18, "Quantization-aware training".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.quant.common import fmt, load, split_ids, val_nats
from spiral.plotting import PALETTE, new_figure
from spiral.quant import convert, prepare_qat, quantize_model
from spiral.train import TrainConfig, train


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    standin_steps: int = 300
    bits: int = 4
    steps: int = 300
    batch_size: int = 4
    seq_len: int = 128
    lr: float = 2e-4
    eval_interval: int = 50
    curve_tokens: int = 8192
    seeds: tuple[int, ...] = (0, 1, 2)
    val_tokens: int = 32768


def _finetune(m: Any, c: Config, seed: int) -> list[dict[str, Any]]:
    tc = TrainConfig(max_steps=c.steps, batch_size=c.batch_size, seq_len=c.seq_len,
                     lr=c.lr, warmup_steps=0, schedule="cosine", weight_decay=0.0,
                     eval_interval=c.eval_interval, eval_tokens=c.curve_tokens, seed=seed,
                     progress=False)
    state = train(m, m.configure_optimizer(lr=c.lr, weight_decay=0.0), split_ids("train"),
                  split_ids("val")[:c.curve_tokens], tc, np.random.default_rng(seed))
    m.eval()
    return [{"step": h["step"], "val": h["val_loss"]} for h in state.history]


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config
    m = load(c.base, c.standin_steps).model
    f32, f32_c = val_nats(m, c.val_tokens), val_nats(m, c.curve_tokens)
    quantize_model(m, c.bits)
    rtn, rtn_c = val_nats(m, c.val_tokens), val_nats(m, c.curve_tokens)
    qat, control, control_c, curves = [], [], [], []
    for seed in c.seeds:
        m = load(c.base, c.standin_steps).model
        prepare_qat(m, c.bits)
        curves.append([{"step": 0, "val": rtn_c}, *_finetune(m, c, seed)])
        convert(m)
        qat.append(val_nats(m, c.val_tokens))
        m = load(c.base, c.standin_steps).model
        _finetune(m, c, seed)
        quantize_model(m, c.bits)
        control.append(val_nats(m, c.val_tokens))
        control_c.append(val_nats(m, c.curve_tokens))
    q, ctl = mean_sd(qat), mean_sd(control)
    rows = [["float32 (start)", f"{f32:.4f}", "1"],
            [f"RTN INT{c.bits} per channel", f"{rtn:.4f}", "1"],
            [f"float fine-tune {c.steps} steps, then RTN INT{c.bits}",
             fmt(ctl), str(ctl["n"])],
            [f"QAT INT{c.bits} {c.steps} steps (converted)", fmt(q), str(q["n"])]]
    return {"float32": f32, "rtn": rtn, "qat": q, "control": ctl, "curves": curves,
            "curve_tokens_lines": {"float32": f32_c, "rtn": rtn_c,
                                   "control": float(np.mean(control_c))},
            "table": {"columns": ["model", "val nats/byte", "runs"], "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(1, 1, width=6.0, height=3.0)
    for i, cv in enumerate(results["curves"]):
        ax.plot([p["step"] for p in cv], [p["val"] for p in cv], color=PALETTE[2], lw=1,
                alpha=0.8, label="QAT (fake-quantized), per seed" if i == 0 else None)
    lines = results["curve_tokens_lines"]  # on the same validation tokens as the curves
    ax.axhline(lines["rtn"], color=PALETTE[1], ls="--", lw=1, label="RTN (no training)")
    ax.axhline(lines["control"], color=PALETTE[4], ls="-.", lw=1,
               label="float fine-tune, then RTN (mean)")
    ax.axhline(lines["float32"], color="k", ls=":", lw=0.8, label="float32 start")
    ax.set_xlabel("QAT step")
    ax.set_ylabel("nats per byte (first validation tokens)")
    ax.legend(fontsize=6)
    return {"qat_curves": fig}


def check(results: dict[str, Any]) -> None:
    assert results["qat"]["mean"] < results["rtn"]
    # the gain is from training through the rounding, not from more training: the same
    # fine-tuning in float, then RTN, does worse
    assert results["qat"]["mean"] < results["control"]["mean"]


EXPERIMENT = Experiment(
    name="quant_qat", stage=18, title="QAT against post-training RTN",
    quick=Config(base="standin", standin_steps=200, bits=2, steps=30, seq_len=32,
                 batch_size=16, eval_interval=10,
                 curve_tokens=1024, seeds=(0,), val_tokens=2048),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("QAT", r["qat"]["mean"]), ("RTN", r["rtn"])],
)
