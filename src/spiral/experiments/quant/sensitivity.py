"""Per-layer sensitivity, and mixed precision: the most sensitive layers kept in 8 bits.

Sensitivity of a layer: the validation loss increase when that layer alone is quantized
(RTN, ``bits``, per channel) and every other layer stays float32. Mixed precision: every
layer at ``bits`` except the k most sensitive, kept at 8 bits, for k in ``keep``; each point
is scored on the validation split and sized in bytes. The "gap recovered" is
(L_low − L_mixed) / (L_low − L_float32). Sensitivities do not simply add (layers interact),
which the sum-vs-joint row reports. Chapter: stage 18, "Mixed precision".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.quant.common import linear_names, load, val_nats
from spiral.plotting import PALETTE, new_figure
from spiral.quant import nbytes, quantize_model


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    standin_steps: int = 300
    bits: int = 4
    val_tokens: int = 16384
    keep: tuple[int, ...] = (0, 1, 2, 4, 8, 16, -1)  # layers kept in 8 bits; -1 = all


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config
    m = load(c.base, c.standin_steps).model
    names = linear_names(m)
    f32, f32_bytes = val_nats(m, c.val_tokens), nbytes(m)
    sens = {}
    for n in names:
        m = load(c.base, c.standin_steps).model
        quantize_model(m, c.bits, include=(n,))
        sens[n] = val_nats(m, c.val_tokens) - f32
    order = sorted(names, key=lambda n: -sens[n])
    mixed = []
    for k in sorted({len(names) if k < 0 else min(k, len(names)) for k in c.keep}):
        m = load(c.base, c.standin_steps).model
        quantize_model(m, c.bits, precision={n: 8 for n in order[:k]})
        mixed.append({"k": k, "nats": val_nats(m, c.val_tokens), "bytes": nbytes(m)})
    low = mixed[0]["nats"]
    for p in mixed:
        p["gap_recovered"] = (low - p["nats"]) / (low - f32) if low > f32 else float("nan")
    k_half = next((p["k"] for p in mixed if p["gap_recovered"] >= 0.5), len(names))
    # sensitivities are on the first val_tokens validation tokens (same for every point)
    rows = [[n, f"{sens[n]:+.4f}", str(order.index(n) + 1)] for n in names]
    mrows = [[str(p["k"]), ", ".join(order[:int(p["k"])]) if 0 < p["k"] <= 3 else
              ("none" if p["k"] == 0 else f"top {p['k']}"), f"{p['nats']:.4f}",
              f"{p['gap_recovered']:.0%}", f"{p['bytes']:,}", f"{p['bytes'] / f32_bytes:.1%}"]
             for p in mixed]
    return {"float32": f32, "float32_bytes": f32_bytes, "sensitivity": sens, "order": order,
            "sum_of_sensitivities": float(sum(sens.values())),
            "joint_increase": low - f32, "mixed": mixed, "k_half": k_half,
            "table": {"columns": ["layer", f"Δ nats (INT{c.bits} alone)", "rank"],
                      "rows": rows},
            "mixed_table": {"columns": ["layers in 8 bits", "which", "val nats/byte",
                                        "gap recovered", "bytes", "of float32"],
                            "rows": mrows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (a, b) = new_figure(1, 2, width=7.4, height=3.0)
    names = list(results["sensitivity"])
    y = np.arange(len(names))
    # millinats: a quantized layer moves the loss by thousandths of a nat, and tick labels
    # in nats (0.0005, 0.0010, ...) run into each other at this width.
    a.barh(y, [1000 * results["sensitivity"][n] for n in names], color=PALETTE[1])
    a.set_yticks(y, names, fontsize=6)
    a.invert_yaxis()
    a.axvline(0, color="k", lw=0.5)
    a.set_xlabel("Δ validation millinats, this layer alone quantized")
    mx = results["mixed"]
    b.plot([p["bytes"] / 1024 for p in mx], [p["nats"] for p in mx], "o-", color=PALETTE[0],
           ms=3)
    for p in mx[:4]:
        b.annotate(str(p["k"]), (p["bytes"] / 1024, p["nats"]), fontsize=6,
                   xytext=(3, 3), textcoords="offset points")
    b.axhline(results["float32"], color="k", lw=0.6, ls=":", label="float32")
    b.set_xlabel("size (KiB); label = layers kept in 8 bits")
    b.set_ylabel("validation nats per byte")
    b.legend(fontsize=6)
    return {"sensitivity": fig}


def check(results: dict[str, Any]) -> None:
    mx = results["mixed"]
    assert mx[0]["nats"] > results["float32"]  # the low-bit model is worse
    assert mx[-1]["nats"] < mx[0]["nats"]  # all layers in 8 bits recovers
    assert mx[-1]["gap_recovered"] > 0.9
    n = mx[-1]["k"]
    half = next(p for p in mx if p["k"] >= n // 2)  # the more sensitive half in 8 bits
    assert half["gap_recovered"] > 0.5


EXPERIMENT = Experiment(
    name="quant_sensitivity", stage=18, title="Per-layer sensitivity and mixed precision",
    quick=Config(base="standin", standin_steps=200, bits=2, val_tokens=2048),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("layers in 8 bits for half the gap", r["k_half"])],
)
