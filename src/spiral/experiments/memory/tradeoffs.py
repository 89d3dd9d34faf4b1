"""Trade-offs: halve one knob, measure the memory it saves and what it costs.

From the baby model at batch B, context T, float32: halve the batch (fewer tokens per
step), the context (shorter dependencies, fewer tokens), the width (fewer parameters), or
store everything in float16 (pure half precision, no master copy). Each row is a measured
step (profiler) beside its prediction; the cost column is measured too: tokens per step,
parameters, or, for float16, the fraction of parameters that are no longer finite after
two AdamW steps, the warm-up and the profiled one (its ε = 1e-8 rounds to 0 in float16,
so 0/0 appears where v is 0).
Mixed precision, which avoids that, is a predicted row only: our engine has no mixed mode
until stage 12. Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.memory.common import MiB, batch
from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.nn import functional as F
from spiral.optim import AdamW
from spiral.plotting import PALETTE, new_figure
from spiral.profiling.memory import predict_training_memory, profile_step


@dataclass(frozen=True)
class Config:
    B: int = 16
    T: int = 64


def _row(c: GPTConfig, B: int, T: int, seed: int, dtype: Any = np.float32
         ) -> dict[str, Any]:
    model = GPT(c, rng=np.random.default_rng(seed), dtype=dtype)
    opt = AdamW(model.parameters(), lr=1e-3)
    tl = profile_step(model, batch(c, B, T, seed), opt, warmup=True)
    prec = "fp16" if dtype == np.float16 else "fp32"
    pred = predict_training_memory(c, B, T, "adamw", prec)
    with np.errstate(all="ignore"):
        bad = sum(int((~np.isfinite(p.data)).sum()) for p in model.parameters())
        x, y = batch(c, B, T, seed)
        loss = float(F.cross_entropy(model(x), y).item())
    return {"measured": tl.peak, "predicted": pred.peak_visible, "tokens": B * T,
            "params": count_parameters(c), "nonfinite_share": bad / count_parameters(c),
            "loss_after": loss}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    c = GPTConfig.preset("baby", 65)
    B, T = config.B, config.T
    with np.errstate(all="ignore"):
        rows = {"baseline (fp32)": _row(c, B, T, seed),
                "half the batch": _row(c, B // 2, T, seed),
                "half the context": _row(c, B, T // 2, seed),
                "half the width": _row(replace(c, d_model=c.d_model // 2), B, T, seed),
                "float16 everywhere": _row(c, B, T, seed, np.float16)}
    base = rows["baseline (fp32)"]["measured"]
    mixed = predict_training_memory(c, B, T, "adamw", "mixed").peak_visible
    table = []
    for name, r in rows.items():
        r["saved"] = 1 - r["measured"] / base
        cost = {"half the batch": f"{r['tokens']:,} tokens per step",
                "half the context": f"context {T // 2}, {r['tokens']:,} tokens per step",
                "half the width": f"{r['params']:,} parameters",
                "float16 everywhere": f"{r['nonfinite_share']:.1%} of parameters not finite "
                                      "after two AdamW steps"}.get(name, f"{r['tokens']:,} "
                                                                    "tokens per step")
        table.append([name, f"{r['predicted'] / MiB:.1f}", f"{r['measured'] / MiB:.1f}",
                      f"{r['saved']:.0%}", cost])
    table.append(["mixed (16-bit activations, fp32 master + Adam), predicted",
                  f"{mixed / MiB:.1f}", "–", f"{1 - mixed / base:.0%}",
                  "needs a mixed-precision engine (stage 12)"])
    return {"rows": rows, "mixed_predicted": mixed,
            "max_abs_rel_error": max(abs(r["predicted"] - r["measured"]) / r["measured"]
                                     for r in rows.values()),
            "table": {"columns": ["change", "predicted peak (MiB)", "measured peak (MiB)",
                                  "memory saved", "what it costs (measured)"],
                      "rows": table}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(1, 1, width=6.4, height=2.8)
    names = list(results["rows"])
    y = np.arange(len(names))
    ax.barh(y - 0.2, [results["rows"][n]["predicted"] / MiB for n in names], height=0.4,
            color=PALETTE[1], label="predicted")
    ax.barh(y + 0.2, [results["rows"][n]["measured"] / MiB for n in names], height=0.4,
            color=PALETTE[0], label="measured")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("peak of one AdamW step (MiB)")
    ax.legend(fontsize=7)
    return {"tradeoffs": fig}


def check(results: dict[str, Any]) -> None:
    assert results["max_abs_rel_error"] < 0.05
    rows = results["rows"]
    assert 0.45 < rows["float16 everywhere"]["saved"] < 0.55  # every array halves
    assert rows["float16 everywhere"]["nonfinite_share"] > 0.0  # and Adam's ε underflows
    assert rows["half the batch"]["saved"] > 0.2


EXPERIMENT = Experiment(
    name="memory_tradeoffs", stage=11, title="Halve a knob: memory saved, cost measured",
    quick=Config(B=4, T=32), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("max |model - profiler|", r["max_abs_rel_error"])],
)
