"""Time and peak memory of one attention head against sequence length n.

Prediction: 12 n² d FLOPs for forward + backward (time ∝ n² at fixed d) and a few n × n
float arrays alive at once (memory ∝ n²). We measure both with
:mod:`spiral.profiling.attention` and fit

    peak bytes = a · n² + b · n · d        (exact allocation counts, least squares)
    seconds    ∝ n^k                       (log-log slope over the longest sequences)

The memory crossover n* = b·d / a is where the quadratic term overtakes the linear ones;
beyond it the n × n arrays are most of the memory. A memory budget M then gives the longest
context directly, n_max = √(M / a), and the time law says what one pass would cost there on
this machine — which tells whether time or memory is the wall. Chapter: stage 7 ("What
attention costs").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, direct_label, new_figure

# published shapes (layers, heads, context) for the stored-probabilities arithmetic
MODELS = {"GPT-2 small: 12 layers × 12 heads, n = 1,024": (12, 12, 1024),
          "GPT-2 small shape at n = 32,768": (12, 12, 32768),
          "GPT-3 175B: 96 layers × 96 heads, n = 2,048": (96, 96, 2048)}


@dataclass(frozen=True)
class Config:
    ns: tuple[int, ...] = (32, 64, 128, 256, 362, 512, 724, 1024, 1448, 2048, 2896, 4096)
    d: int = 64
    repeats: int = 5
    budgets_gb: tuple[float, ...] = (16.0, 80.0)


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.profiling.attention import profile_attention

    rec = profile_attention(config.ns, config.d, repeats=config.repeats)
    ns = np.array([r["n"] for r in rec], dtype=np.float64)
    sec = [r["seconds"] for r in rec]
    peak = np.array([r["peak_bytes"] for r in rec], dtype=np.float64)
    upper = slice(len(ns) // 2, None)  # the longest half: where the n² terms dominate
    # peak = a n² + b n d, fitted with relative weights so short sequences count too
    design = np.stack([ns**2, ns * config.d], 1) / peak[:, None]
    a, b = np.linalg.lstsq(design, np.ones_like(peak), rcond=None)[0]
    fit_err = float(np.max(np.abs((a * ns**2 + b * ns * config.d) / peak - 1)))
    t_coef = float(np.median(np.array(sec[upper]) / ns[upper] ** 2))  # seconds per n²
    budgets: dict[str, float] = {f"{gb:g} GB": gb * 1e9 for gb in config.budgets_gb}
    try:
        budgets["this machine's RAM"] = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    limits = {k: int(math.sqrt(v / a)) for k, v in budgets.items()}
    budget_rows = [[k, f"{n:,}", f"{t_coef * n * n:,.0f} s"] for k, n in limits.items()]
    rows = [[r["n"], f"{r['seconds'] * 1e3:.2f}", f"{r['flops'] / r['seconds'] / 1e9:.1f}",
             f"{r['peak_bytes'] / 2**20:.2f}", f"{r['peak_bytes'] / r['n'] ** 2:.2f}"]
            for r in rec]
    # a model keeps every layer's and head's n × n probabilities for the backward pass
    model_rows = [[name, f"{L * h * n * n * 2 / 1e9:,.1f} GB"]
                  for name, (L, h, n) in MODELS.items()]
    return {"records": rec, "ns": [int(n) for n in ns], "d": config.d,
            "time_slope": _slope(list(ns[upper]), sec[upper]),
            "time_slope_from_n": int(ns[upper][0]),
            "memory_slope": _slope(list(ns[upper]), list(peak[upper])),
            "bytes_per_n2": float(a), "floats_per_n2": float(a) / 4,
            "bytes_per_nd": float(b), "floats_per_nd": float(b) / 4,
            "memory_fit_max_rel_error": fit_err,
            "memory_crossover_n": float(b) * config.d / float(a),
            "time_crossover_n_predicted": 2 * config.d,
            "seconds_per_n2": t_coef,
            "max_context": limits,
            "time_at_max_n_ms": sec[-1] * 1e3, "peak_at_max_n_mib": peak[-1] / 2**20,
            "max_n": int(ns[-1]),
            "table": {"columns": ["n", "forward + backward (ms)", "GFLOP/s", "peak memory (MiB)",
                                  "bytes per n²"], "rows": rows},
            "budget_table": {"columns": ["memory", "longest context, one head, batch 1",
                                         "one forward + backward there, this CPU (n² law)"],
                             "rows": budget_rows},
            "stored_probabilities_table": {
                "columns": ["model shape", "n × n probabilities kept per sequence (2-byte floats)"],
                "rows": model_rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 2, width=7.4, height=3.3)
    ns = results["ns"]
    rec = results["records"]
    ref_n = ns[-1]
    for ax, key, unit, scale in ((axes[0], "seconds", "time, forward + backward (s)", 1.0),
                                 (axes[1], "peak_bytes", "peak memory (MiB)", 2**-20)):
        y = [r[key] * scale for r in rec]
        ax.plot(ns, y, marker="o", ms=3, color=PALETTE[0], lw=1.2)
        direct_label(ax, ns, y, "measured", color=PALETTE[0], dy=-6)
        if key == "seconds":  # c · n², anchored at the longest n
            pred = [y[-1] * (n / ref_n) ** 2 for n in ns]
        else:  # the fitted quadratic term a · n² alone
            pred = [results["bytes_per_n2"] * n * n * scale for n in ns]
        ax.plot(ns, pred, color="#999999", lw=1.0, ls=":")
        direct_label(ax, ns, pred, "∝ n²" if key == "seconds" else "a·n² term", color="#777777",
                     dy=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(min(ns) * 0.8, max(ns) * 3)
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(unit)
    xc = results["memory_crossover_n"]
    axes[1].axvline(xc, color=PALETTE[1], lw=0.8, ls="--")
    axes[1].annotate("n² term = linear terms", (xc, rec[-1]["peak_bytes"] * 2**-20), xytext=(4, 0),
                     textcoords="offset points", fontsize=7, color=PALETTE[1], va="top")
    return {"time_memory": fig}


def check(results: dict[str, Any]) -> None:
    # memory grows as n² once n is large: fitted exponent near 2, and a n² + b n d fits every
    # point (bytes are deterministic; the time slope is reported, never asserted: wall-clock
    # on a shared machine is noise)
    assert 1.85 < results["memory_slope"] < 2.1, results["memory_slope"]
    assert results["memory_fit_max_rel_error"] < 0.1
    assert results["memory_crossover_n"] < 4 * results["d"]
    # the peak holds a few n × n float32 arrays: between 2 and 8 of them
    assert 2.0 < results["floats_per_n2"] < 8.0, results["floats_per_n2"]


EXPERIMENT = Experiment(
    name="attention_complexity", stage=7, title="Attention time and memory against n",
    quick=Config(ns=(32, 64, 128, 256, 512, 1024), repeats=2),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("time slope", r["time_slope"]), ("memory slope", r["memory_slope"]),
                       ("floats per n²", r["floats_per_n2"])],
)
