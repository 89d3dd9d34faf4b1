"""Where a training step's memory goes, per preset: predicted term by term, then measured.

For each preset the analytic model (:func:`spiral.profiling.memory.predict_training_memory`)
predicts the peak and its terms (parameters, gradients, Adam's two moments, activations,
gradients in flight) and where the peak falls; the profiler measures the same step with a
tag on every array; tracemalloc witnesses it independently. The timeline figure shows live
bytes over the step for the baby model, predicted over measured, with the peak marked; the
inference pass of the same batch stands beside it. Chapter: stage 11.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.memory.common import MiB, batch, measure
from spiral.models.gpt import GPT, GPTConfig
from spiral.optim import AdamW
from spiral.plotting import PALETTE, new_figure
from spiral.profiling.memory import (
    TAGS,
    predict_inference_memory,
    predict_training_memory,
    profile_inference,
    profile_step,
)


@dataclass(frozen=True)
class Config:
    runs: tuple[tuple[str, int, int], ...] = (("baby", 16, 64), ("small", 8, 256))
    vocab_size: int = 65  # Shakespeare's characters
    timeline_run: int = 0
    # a long-context model whose true peak falls inside attention's backward kernel
    long_context: tuple[int, int, int, int] = (32, 2, 4, 256)  # d_model, layers, B, T


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    presets: dict[str, Any] = {}
    rows, inf_rows = [], []
    for name, B, T in config.runs:
        c = GPTConfig.preset(name, config.vocab_size)
        m = measure(c, B, T, seed, witness=True)
        pred = predict_training_memory(c, B, T, "adamw")
        model = GPT(c, rng=np.random.default_rng(seed))
        inf = profile_inference(model, batch(c, B, T, seed)[0])
        inf_pred = predict_inference_memory(c, B, T)
        m.update(terms=pred.to_dict(), inference_measured=inf.peak,
                 inference_predicted=inf_pred.peak_visible,
                 inference_rel_error=(inf_pred.peak_visible - inf.peak) / inf.peak,
                 training_over_inference=m["measured"] / inf.peak)
        presets[name] = m
        rows.append([name, f"{B} × {T}", f"{pred.params / MiB:.1f}",
                     f"{pred.optimizer_state / MiB:.1f}", f"{pred.grads / MiB:.2f}",
                     f"{pred.activations / MiB:.1f}", f"{pred.in_flight / MiB:.1f}",
                     f"{pred.peak_visible / MiB:.1f}", f"{m['measured'] / MiB:.1f}",
                     f"{m['rel_error']:+.4%}", f"{m['tracemalloc'] / MiB:.1f}"])
        inf_rows.append([name, f"{inf_pred.peak_visible / MiB:.1f}", f"{inf.peak / MiB:.1f}",
                         f"{m['measured'] / MiB:.1f}", f"{m['training_over_inference']:.1f}×"])
    name, B, T = config.runs[config.timeline_run]
    c = GPTConfig.preset(name, config.vocab_size)
    model = GPT(c, rng=np.random.default_rng(seed))
    tl = profile_step(model, batch(c, B, T, seed), AdamW(model.parameters(), lr=1e-3))
    pred = predict_training_memory(c, B, T, "adamw")
    first = presets[config.runs[0][0]]
    C, L, B_l, T_l = config.long_context
    long_c = GPTConfig(vocab_size=config.vocab_size, context_length=T_l, n_layers=L,
                       n_heads=4, d_model=C)
    long_run = measure(long_c, B_l, T_l, seed, witness=True)
    return {
        "long_context": long_run,
        "presets": presets,
        "max_abs_rel_error": max(abs(p["rel_error"]) for p in presets.values()),
        "max_abs_witness_gap": max(abs(p["profiler_vs_tracemalloc"]) for p in presets.values()),
        "first": first,
        "timeline": {"preset": name, "B": B, "T": T,
                     "measured": [e.live for e in tl.events],
                     "phases": [e.phase for e in tl.events],
                     "peak_index": tl.peak_index, "peak_op": tl.peak_op,
                     "predicted": [v for _, _, v in pred.timeline],
                     "predicted_phases": [ph for ph, _, _ in pred.timeline],
                     "predicted_peak_at": pred.peak_at},
        "table": {"columns": ["preset", "B × T", "params (MiB)", "Adam m, v (MiB)",
                              "grads at peak (MiB)", "activations at peak (MiB)",
                              "grads in flight (MiB)", "predicted peak (MiB)",
                              "measured peak (MiB)", "error", "tracemalloc (MiB)"],
                  "rows": rows},
        "inference_table": {"columns": ["preset", "inference predicted (MiB)",
                                        "inference measured (MiB)", "training measured (MiB)",
                                        "training / inference"], "rows": inf_rows},
    }


def _progress(phases: list[str]) -> np.ndarray:
    """x positions: the forward pass (and loss) on [0, 0.4], backward and step on [0.4, 1]."""
    fwd = np.array([ph in ("forward", "loss") for ph in phases])
    x = np.zeros(len(phases))
    nf, nb = max(int(fwd.sum()), 1), max(int((~fwd).sum()), 1)
    x[fwd] = 0.4 * np.arange(1, int(fwd.sum()) + 1) / nf
    x[~fwd] = 0.4 + 0.6 * np.arange(1, int((~fwd).sum()) + 1) / nb
    return x


def plot(results: dict[str, Any]) -> dict[str, Any]:
    tl = results["timeline"]
    fig, ax = new_figure(1, 1, width=7.0, height=3.4)
    keep = [k for k, ph in enumerate(tl["phases"]) if ph != "setup"]
    meas = np.array(tl["measured"])[keep] / MiB
    x_m = _progress([tl["phases"][k] for k in keep])
    pred = np.array(tl["predicted"]) / MiB
    x_p = _progress(tl["predicted_phases"])
    ax.plot(x_m, meas, color=PALETTE[0], lw=1.2, label="measured (profiler, every array event)")
    ax.plot(x_p, pred, color=PALETTE[1], lw=1.0, ls="--",
            label="predicted (analytic model, every graph node)")
    i = keep.index(tl["peak_index"])
    ax.annotate(f"measured peak {meas[i]:.1f} MiB: {tl['peak_op']}\n"
                f"predicted: {tl['predicted_peak_at']}", (x_m[i], meas[i]),
                xytext=(30, -6), textcoords="offset points", fontsize=7,
                arrowprops={"arrowstyle": "->", "lw": 0.6})
    ax.axvline(0.4, color="#999999", lw=0.7, ls=":")
    ax.text(0.2, meas.min(), "forward + loss", ha="center", va="bottom", fontsize=7)
    ax.text(0.7, meas.min(), "backward, optimizer.step, zero_grad", ha="center", va="bottom",
            fontsize=7)
    ax.set_xlabel("progress through the step (each phase by its own event count)")
    ax.set_ylabel("live bytes (MiB)")
    ax.set_title(f"{tl['preset']} preset, B = {tl['B']}, T = {tl['T']}, AdamW", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig2, ax2 = new_figure(1, 1, width=6.4, height=3.2)
    names = list(results["presets"])
    left = np.zeros(len(names))
    colors = dict(zip(TAGS, PALETTE))
    for tag in TAGS:
        vals = np.array([results["presets"][n]["measured_by_tag"][tag] for n in names]) / MiB
        ax2.barh(names, vals, left=left, color=colors[tag], label=tag)
        left += vals
    for k, n in enumerate(names):
        ax2.plot(results["presets"][n]["predicted"] / MiB, k, marker="|", ms=18, color="k")
    ax2.set_xlabel("bytes at the measured peak, by tag (MiB); | = predicted peak")
    ax2.legend(fontsize=7, ncol=3, loc="lower right")
    return {"timeline": fig, "breakdown": fig2}


def check(results: dict[str, Any]) -> None:
    assert results["max_abs_rel_error"] < 0.05, results["max_abs_rel_error"]
    for p in results["presets"].values():
        assert p["measured_phase"] == "backward"
        assert p["training_over_inference"] > 3.0
        assert abs(p["inference_rel_error"]) < 0.05
    lc = results["long_context"]
    assert lc["predicted_total_at"].endswith("attn.sdpa")  # the true peak: attention backward
    assert abs(lc["model_total_vs_tracemalloc"]) < 0.05  # which the model's scratch predicts


EXPERIMENT = Experiment(
    name="memory_breakdown", stage=11, title="Where a training step's memory goes, per preset",
    quick=Config(runs=(("baby", 4, 32), ("small", 1, 64)), long_context=(32, 1, 2, 128)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("max |model - profiler| / profiler", r["max_abs_rel_error"]),
                       ("max |profiler - tracemalloc|", r["max_abs_witness_gap"])],
)
