"""Time and peak memory of one attention head against sequence length n.

Prediction: 12 n² d FLOPs for forward + backward (time ∝ n² at fixed d) and a few n × n
float arrays alive at once (memory ∝ n²). We measure both with
:mod:`spiral.profiling.attention`, fit the log-log slope over the longest sequences, and
read off two crossovers:

* where memory becomes the limit for SPEED: the n at which one n × n float32 matrix no
  longer fits in the CPU's L2 cache, after which the memory-bound steps (softmax, mask,
  its backward) stream through slower memory and the achieved GFLOP/s falls;
* where memory becomes the limit for CONTEXT: the n at which the measured bytes per n²
  fill a given memory (this machine's RAM; an 80 GB accelerator), per head and sequence.

Chapter: stage 7 ("What attention costs").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.style import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    ns: tuple[int, ...] = (32, 64, 128, 256, 362, 512, 724, 1024, 1448, 2048, 2896, 4096)
    d: int = 64
    repeats: int = 3
    budgets_gb: tuple[float, ...] = (16.0, 80.0)


def _cache_bytes(level: int) -> int | None:
    """Size of the CPU's data/unified cache at ``level`` from sysfs (None if unknown)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(root.glob("index*")):
        try:
            if int((idx / "level").read_text()) != level:
                continue
            if (idx / "type").read_text().strip() == "Instruction":
                continue
            size = (idx / "size").read_text().strip()
            mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
            return int(size.rstrip("KM")) * mult
        except (OSError, ValueError):
            continue
    return None


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.profiling.attention import profile_attention

    rec = profile_attention(config.ns, config.d, repeats=config.repeats)
    ns = [r["n"] for r in rec]
    sec = [r["seconds"] for r in rec]
    peak = [r["peak_bytes"] for r in rec]
    gflops = [r["flops"] / r["seconds"] / 1e9 for r in rec]
    upper = slice(len(ns) // 2, None)  # the slope where the n² terms dominate
    bytes_per_n2 = peak[-1] / ns[-1] ** 2
    l2 = _cache_bytes(2)
    n_l2 = int(math.sqrt(l2 / 4)) if l2 else None  # one float32 n × n matrix fills L2
    # time: fit beyond the cache crossover (where one regime holds), else the upper half
    out_of_cache = [i for i, n in enumerate(ns) if n_l2 and n >= 2 * n_l2]
    t_idx = out_of_cache if len(out_of_cache) >= 2 else list(range(len(ns)))[upper]
    budgets = {f"{gb:g} GB": int(math.sqrt(gb * 1e9 / bytes_per_n2)) for gb in config.budgets_gb}
    try:
        ram = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
        budgets["this machine's RAM"] = int(math.sqrt(ram / bytes_per_n2))
    except (OSError, ValueError, IndexError):
        pass
    below = [g for n, g in zip(ns, gflops, strict=True) if n_l2 and n < n_l2 and n >= 128]
    above = [g for n, g in zip(ns, gflops, strict=True) if n_l2 and n >= 2 * n_l2]
    rows = [[r["n"], f"{r['seconds'] * 1e3:.2f}", f"{g:.1f}", f"{r['peak_bytes'] / 2**20:.2f}",
             f"{r['peak_bytes'] / r['n'] ** 2:.2f}"] for r in rec for g in [r["flops"] /
                                                                             r["seconds"] / 1e9]]
    return {"records": rec, "ns": ns, "d": config.d, "gflops": gflops,
            "time_slope": _slope([ns[i] for i in t_idx], [sec[i] for i in t_idx]),
            "time_slope_from_n": ns[t_idx[0]],
            "memory_slope": _slope(ns[upper], peak[upper]),
            "bytes_per_n2": bytes_per_n2, "floats_per_n2": bytes_per_n2 / 4,
            "l2_bytes": l2, "n_fills_l2": n_l2,
            "gflops_in_cache": float(np.median(below)) if below else None,
            "gflops_out_of_cache": float(np.median(above)) if above else None,
            "max_context": budgets,
            "time_at_max_n_ms": sec[-1] * 1e3, "peak_at_max_n_mib": peak[-1] / 2**20,
            "max_n": ns[-1],
            "table": {"columns": ["n", "forward + backward (ms)", "GFLOP/s", "peak memory (MiB)",
                                  "bytes per n²"], "rows": rows},
            "budget_table": {"columns": ["memory", "longest context, one head, batch 1"],
                             "rows": [[k, f"{v:,}"] for k, v in budgets.items()]}}


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
        pred = [y[-1] * (n / ref_n) ** 2 for n in ns]  # c · n², anchored at the longest n
        ax.plot(ns, pred, color="#999999", lw=1.0, ls=":")
        direct_label(ax, ns, pred, "∝ n²", color="#777777", dy=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(min(ns) * 0.8, max(ns) * 3)
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(unit)
    if results.get("n_fills_l2"):
        for ax in axes:
            ax.axvline(results["n_fills_l2"], color=PALETTE[1], lw=0.8, ls="--")
        axes[0].annotate("n × n floats\nfill L2", (results["n_fills_l2"], rec[0]["seconds"]),
                         xytext=(4, 0), textcoords="offset points", fontsize=7,
                         color=PALETTE[1])
    fig2, ax2 = new_figure(width=5.4, height=3.0)
    ax2.plot(ns, results["gflops"], marker="o", ms=3, color=PALETTE[0])
    if results.get("n_fills_l2"):
        ax2.axvline(results["n_fills_l2"], color=PALETTE[1], lw=0.8, ls="--")
        ax2.annotate("one n × n float32 matrix = L2 cache", (results["n_fills_l2"],
                     max(results["gflops"])), xytext=(4, -4), textcoords="offset points",
                     fontsize=7, color=PALETTE[1], va="top")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("sequence length n")
    ax2.set_ylabel("achieved GFLOP/s (12 n² d / time)")
    return {"time_memory": fig, "throughput": fig2}


def check(results: dict[str, Any]) -> None:
    # memory grows as n² once n is large: fitted exponent near 2 (bytes are deterministic;
    # the time slope is reported, never asserted: wall-clock on a shared machine is noise)
    assert 1.85 < results["memory_slope"] < 2.1, results["memory_slope"]
    # the peak holds a few n × n float32 arrays: between 2 and 8 of them
    assert 2.0 < results["floats_per_n2"] < 8.0, results["floats_per_n2"]


EXPERIMENT = Experiment(
    name="attention_complexity", stage=7, title="Attention time and memory against n",
    quick=Config(ns=(64, 128, 256, 512, 1024, 2048), repeats=2),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("time slope", r["time_slope"]), ("memory slope", r["memory_slope"]),
                       ("floats per n²", r["floats_per_n2"])],
)
