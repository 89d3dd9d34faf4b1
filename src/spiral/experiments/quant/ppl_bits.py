"""Perplexity against bits: float32, INT8, RTN per channel and per group, GPTQ, AWQ.

Every method quantizes every Linear of the model (the tied embedding/head stays float32)
and is scored by the shared evaluator on the validation split (its first ``val_tokens``
tokens, the same for every method, to keep the run to minutes), in nats per byte. GPTQ
(sequential, act-order, per group) and AWQ (per group) calibrate on ``calib_windows``
random training windows; their rows are mean ± sd over calibration-set seeds. Sizes are
the bytes of every stored array (:func:`spiral.quant.nbytes`: codes, scales, zero points,
float parameters). Chapter: stage 18, "The perplexity–bits table".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.quant.common import calibration, fmt, load, val_nats
from spiral.plotting import PALETTE, new_figure
from spiral.quant import awq_model, gptq_model, nbytes, quantize_model


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    standin_steps: int = 300
    bits: tuple[int, ...] = (4, 3)
    group_size: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    calib_windows: int = 16
    val_tokens: int = 32768  # the first tokens of the validation split; 0 = all of it


def _methods(c: Config, b: int) -> dict[str, tuple[bool, Callable[[Any, int], Any]]]:
    """name -> (calibrated?, apply(model, seed))."""
    g: dict[str, Any] = dict(granularity="group", group_size=c.group_size)
    T = lambda m: m.context_length  # noqa: E731

    def gptq(m: Any, s: int) -> Any:
        return gptq_model(m, calibration(c.calib_windows, T(m), s), b, act_order=True, **g)

    def awq(m: Any, s: int) -> Any:
        return awq_model(m, calibration(c.calib_windows, T(m), s), b, **g)
    return {f"RTN INT{b} per channel": (False, lambda m, s: quantize_model(m, b)),
            f"RTN INT{b} per group": (False, lambda m, s: quantize_model(m, b, **g)),
            f"GPTQ INT{b} per group": (True, gptq),
            f"AWQ INT{b} per group": (True, awq)}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config
    rows: dict[str, dict[str, Any]] = {}

    def score(name: str, apply: Callable[[Any, int], Any] | None, seeds: tuple[int, ...]
              ) -> None:
        nats, size = [], 0
        for s in seeds:
            m = load(c.base, c.standin_steps).model
            if apply is not None:
                apply(m, s)
            nats.append(val_nats(m, c.val_tokens))
            size = nbytes(m)
        rows[name] = {"nats": mean_sd(nats), "bytes": size, "bits": 32 if apply is None else
                      int(name.split("INT")[1].split()[0])}

    score("float32", None, (0,))
    score("INT8 W8A8 (integer matmul)", lambda m, s: quantize_model(m, 8, act_bits=8), (0,))
    score("INT8 weight-only per channel", lambda m, s: quantize_model(m, 8), (0,))
    for b in c.bits:
        for name, (calibrated, apply) in _methods(c, b).items():
            score(name, apply, c.seeds if calibrated else (0,))
    f32 = rows["float32"]["nats"]["mean"]
    table = []
    for name, r in rows.items():
        n = r["nats"]
        cell = fmt(n) if n["n"] > 1 else f"{n['mean']:.4f}"
        table.append([name, cell, f"{np.exp(n['mean']):.3f}", f"{n['mean'] - f32:+.4f}",
                      f"{r['bytes']:,}", f"{r['bytes'] / rows['float32']['bytes']:.1%}",
                      str(n["n"])])
    margins = {}
    for b in c.bits:
        rtn = rows[f"RTN INT{b} per group"]["nats"]["mean"]
        for m in ("GPTQ", "AWQ"):
            margins[f"{m} INT{b}"] = rtn - rows[f"{m} INT{b} per group"]["nats"]["mean"]
    return {"rows": rows, "margins_vs_rtn_group": margins,
            "table": {"columns": ["method", "val nats/byte", "perplexity", "Δ vs float32",
                                  "bytes", "of float32", "runs"], "rows": table}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(1, 1, width=6.4, height=3.2)
    rows = results["rows"]
    kinds = ["RTN INT{b} per channel", "RTN INT{b} per group", "GPTQ INT{b} per group",
             "AWQ INT{b} per group"]
    bits = sorted({r["bits"] for r in rows.values() if r["bits"] < 8}, reverse=True)
    x = np.arange(len(kinds))
    for i, b in enumerate(bits):
        pts = [rows[k.format(b=b)]["nats"] for k in kinds]
        ax.errorbar(x + 0.12 * (i - (len(bits) - 1) / 2), [p["mean"] for p in pts],
                    yerr=[p["sd"] if p["n"] > 1 else 0.0 for p in pts], marker="os^"[i],
                    color=PALETTE[1 + i], ls="none", capsize=3, label=f"{b} bits")
    ax.axhline(rows["float32"]["nats"]["mean"], color="k", ls=":", lw=0.8, label="float32")
    ax.axhline(rows["INT8 weight-only per channel"]["nats"]["mean"], color=PALETTE[4],
               ls="--", lw=0.8, label="INT8 per channel")
    ax.set_xticks(x, [k.replace(" INT{b}", "") for k in kinds], fontsize=7)
    ax.set_ylabel("validation nats per byte")
    ax.legend(fontsize=6)
    return {"ppl_bits": fig}


def check(results: dict[str, Any]) -> None:
    rows = results["rows"]
    f32 = rows["float32"]["nats"]["mean"]
    assert abs(rows["INT8 weight-only per channel"]["nats"]["mean"] - f32) < 0.01
    assert abs(rows["INT8 W8A8 (integer matmul)"]["nats"]["mean"] - f32) < 0.02
    worst = max(r["nats"]["mean"] for r in rows.values())
    assert worst > f32  # quantizing to few bits costs something
    assert rows["RTN INT4 per channel"]["bytes"] < rows["INT8 weight-only per channel"]["bytes"]
    assert rows["RTN INT4 per group"]["bytes"] <= rows["INT8 weight-only per channel"]["bytes"]
    g = rows["GPTQ INT4 per group"]["nats"]
    if g["n"] >= 3:  # the headline claim needs several calibration sets
        assert results["margins_vs_rtn_group"]["GPTQ INT4"] > 2 * g["sd"]


EXPERIMENT = Experiment(
    name="quant_ppl_bits", stage=18, title="Validation loss against bits per weight",
    quick=Config(base="standin", standin_steps=200, bits=(4,), group_size=8, seeds=(0,),
                 calib_windows=8, val_tokens=4096),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(k, v) for k, v in r["margins_vs_rtn_group"].items()],
)
