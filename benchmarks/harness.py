"""Side-by-side timing against a peer: interleaved repeats, medians, min-max, ratios.

Rules (DESIGN.md): never a timed assertion in a test; pin thread counts on both sides;
interleave the candidates so a noisy neighbour hurts all of them alike; report the median
with min-max and the ratio of medians. Results go to
``docs/results/benchmarks/<name>/results.json``, which the performance page reads.

Usage::

    from benchmarks.harness import compare, save
    rec = compare({"spiral": f, "peer": g}, repeats=7, threads=1)
    save("ngram", rec, ours="spiral")
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "benchmarks"


def pin_threads(threads: int) -> ExitStack:
    """Limit BLAS/OpenMP pools (threadpoolctl) and torch, if loaded, to ``threads``."""
    stack = ExitStack()
    try:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(limits=threads))
    except ImportError:
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        stack.callback(torch.set_num_threads, old)
    return stack


def compare(
    candidates: dict[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    threads: int = 1,
    gc_disabled: bool = False,
) -> dict[str, Any]:
    """Time each zero-argument callable ``repeats`` times, interleaved, after ``warmup``."""
    times: dict[str, list[float]] = {k: [] for k in candidates}
    labels = list(candidates)
    with pin_threads(threads):
        for _ in range(warmup):
            for k in labels:
                candidates[k]()
        for r in range(repeats):
            order = labels[r % len(labels):] + labels[: r % len(labels)]  # rotate the order
            for k in order:
                gc.collect()
                if gc_disabled:
                    gc.disable()
                t0 = time.perf_counter()
                candidates[k]()
                dt = time.perf_counter() - t0
                if gc_disabled:
                    gc.enable()
                times[k].append(dt)
    return {
        "threads": threads,
        "repeats": repeats,
        "gc_disabled": gc_disabled,
        "timings": {
            k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "all_s": v}
            for k, v in times.items()
        },
    }


def ratios(record: dict[str, Any], ours: str) -> dict[str, float]:
    """Peer median / our median for every peer (> 1 means we are faster)."""
    t = record["timings"]
    return {k: t[k]["median_s"] / t[ours]["median_s"] for k in t if k != ours}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def save(name: str, results: dict[str, Any], root: Path = RESULTS) -> Path:
    """Write ``results`` (with a ``table`` for the book) as benchmarks/<name>/results.json."""
    record = {
        "experiment": f"benchmarks/{name}",
        "variant": "benchmark",
        "provenance": {"machine": machine(), "argv": sys.argv},
        "results": results,
    }
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".results.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "results.json")
    return folder / "results.json"


def fmt_row(label: str, timing: dict[str, float], ratio: float | None = None) -> list[Any]:
    """A table row: label, median (ms), min-max (ms), ratio."""
    return [
        label,
        round(timing["median_s"] * 1e3, 3),
        f"{timing['min_s'] * 1e3:.3g}–{timing['max_s'] * 1e3:.3g}",
        "1 (ours)" if ratio is None else f"{ratio:.2f}×",
    ]
