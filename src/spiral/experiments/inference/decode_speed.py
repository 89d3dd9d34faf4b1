"""Decode speed with and without the KV cache, at context lengths 64 to 1024.

Without a cache, producing the token after t positions is a forward over all t of them:
F_full(t) = t·2·N_mm + 4·L·H·hd·t². With the cache it is one position against t keys:
F_cached(t) = 2·N_mm + 4·L·H·hd·t. Their ratio, t·(2·N_mm + 4·L·d·t) / (2·N_mm + 4·L·d·t),
grows at least linearly in t — the predicted speed-up. Measured: the best of ``repeats``
timings of each single step at each t on a model of the base's shape (random weights;
speed does not depend on their values) with the context stretched to the longest length.
One process, one BLAS thread; the machine's load average is recorded with the timings.
Chapter: stage 17.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import no_grad
from spiral.experiments.framework import Experiment
from spiral.experiments.inference.common import (
    base_config,
    load_average,
    one_blas_thread,
    random_model,
)
from spiral.inference import KVCache, forward_cached
from spiral.inference.roofline import best_time, forward_flops_cached
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    lengths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    repeats: int = 21   # a cached step takes milliseconds: one busy moment spoils a few


def step_times(model: Any, t: int, repeats: int, seed: int) -> tuple[float, float]:
    """(seconds for the uncached forward over t positions, for one cached decode step at
    position t), each the best of ``repeats``."""
    ids = np.random.default_rng(seed).integers(0, model.config.vocab_size, (1, t))

    def full() -> None:
        with no_grad():
            model(ids)

    cache = KVCache.for_model(model, capacity=t)
    forward_cached(model, ids[:, :t - 1], cache)

    def cached() -> None:
        cache.truncate(t - 1)
        forward_cached(model, ids[:, t - 1:], cache)

    return best_time(full, repeats), best_time(cached, repeats)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    with one_blas_thread():  # timings: one BLAS thread (see common.one_blas_thread)
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    model = random_model(base_config(config.base), seed, context_length=max(config.lengths))
    load_before = load_average()
    rows = []
    for t in config.lengths:
        full, cached = step_times(model, t, config.repeats, seed)
        f_full = forward_flops_cached(model.config, t)
        f_cached = forward_flops_cached(model.config, 1, t - 1)
        rows.append({"length": t, "uncached_s": full, "cached_s": cached,
                     "uncached_tok_s": 1 / full, "cached_tok_s": 1 / cached,
                     "speedup": full / cached, "flop_ratio": f_full / f_cached,
                     "uncached_flops": f_full, "cached_flops": f_cached})
    return {"rows": rows, "load_average": [load_before, load_average()],
            "n_params": model.num_parameters(),
            "table": {"columns": ["context t", "uncached tok/s", "cached tok/s", "speed-up",
                                  "FLOP ratio"],
                      "rows": [[r["length"], f"{r['uncached_tok_s']:.0f}",
                                f"{r['cached_tok_s']:.0f}", f"{r['speedup']:.1f}×",
                                f"{r['flop_ratio']:.0f}×"] for r in rows]}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["rows"]
    t = [r["length"] for r in rows]
    fig, ax = new_figure(1, 2, width=9.0, height=3.4)
    ax[0].plot(t, [r["cached_tok_s"] for r in rows], "o-", color=PALETTE[0], label="KV cache")
    ax[0].plot(t, [r["uncached_tok_s"] for r in rows], "s-", color=PALETTE[1],
               label="no cache (full forward)")
    ax[0].set_xscale("log", base=2)
    ax[0].set_yscale("log")
    ax[0].set_xlabel("context length t")
    ax[0].set_ylabel("decode steps per second (best of repeats)")
    ax[0].legend(fontsize=7)
    ax[1].plot(t, [r["speedup"] for r in rows], "o-", color=PALETTE[0], label="measured")
    ax[1].plot(t, [r["flop_ratio"] for r in rows], "--", color=PALETTE[2],
               label="FLOP ratio F_full / F_cached")
    ax[1].set_xscale("log", base=2)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("context length t")
    ax[1].set_ylabel("speed-up of the cache")
    la = results["load_average"][0][0]
    ax[1].set_title(f"shared machine, 1-min load average {la:.1f}", fontsize=8)
    ax[1].legend(fontsize=7)
    return {"decode_speed": fig}


def check(results: dict[str, Any]) -> None:
    rows = results["rows"]
    assert all(r["speedup"] > 1 for r in rows)
    assert rows[-1]["speedup"] > rows[0]["speedup"]  # the gain grows with t
    assert all(a["flop_ratio"] < b["flop_ratio"] for a, b in zip(rows, rows[1:]))


EXPERIMENT = Experiment(
    name="inference_decode_speed", stage=17,
    title="Decode speed with vs without the KV cache, and the FLOP count that explains it",
    quick=Config(base="standin", lengths=(64, 256, 1024), repeats=5),  # at t = 16 the two tie
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("speed-up at the longest context", r["rows"][-1]["speedup"]),
                       ("FLOP ratio there", r["rows"][-1]["flop_ratio"])],
)
