"""KV-cache memory: bytes per token predicted vs measured, and paged vs contiguous waste.

Predicted: 2·L·Hkv·hd·itemsize bytes per cached position. Measured: tracemalloc (stage 11's
witness, which sees NumPy's allocations) across allocating a cache for t positions and
running a real prefill of t tokens into it, for multi-head (Hkv = H), grouped-query and
multi-query attention of the base model's shape. Fragmentation: a Poisson trace of requests
of varied lengths runs through the continuous-batching engine; at every iteration the
positions actually cached are compared with what a paged pool holds (whole blocks) and what
a contiguous cache reserves (context_length per sequence, or prompt + max_new_tokens).
Chapter: stage 17.
"""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.inference.common import base_config, random_model
from spiral.inference import Engine, KVCache, forward_cached, poisson_trace, replay
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    lengths: tuple[int, ...] = (64, 256, 512, 1024)
    trace_requests: int = 60
    trace_rate: float = 50.0
    block_sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    max_batch: int = 16


def measured_cache_bytes(model: Any, t: int, seed: int) -> int:
    """Bytes still held after allocating a t-position cache and prefilling t tokens into it
    (after a warm-up run, so lazily built tables are not counted)."""
    ids = np.random.default_rng(seed).integers(0, model.config.vocab_size, (1, t))
    for _ in range(2):  # warm lazy tables (twice: some kernels keep small state after a call)
        forward_cached(model, ids, KVCache.for_model(model, capacity=t))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = KVCache.for_model(model, capacity=t)
        forward_cached(model, ids, cache)
        gc.collect()  # a forward leaves small reference cycles behind: not cache memory
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.length == t
    return held


def fragmentation(ctx: int, cfg: Any, block_size: int, requests: list[Any],
                  max_batch: int) -> dict[str, float]:
    """Average share of allocated cache slots holding no token, per layout."""
    tiny = random_model(cfg, n_layers=1, d_model=8, n_heads=1, n_kv_heads=None,
                        context_length=ctx, ffn_hidden=8)
    engine = Engine(tiny, num_blocks=max_batch * -(-ctx // block_size) + 1,
                    block_size=block_size, max_batch=max_batch)
    used, paged, full, exact = 0, 0, 0, 0
    orig_step = engine.step

    def step() -> Any:  # sample the cache's occupancy after each iteration's work
        nonlocal used, paged, full, exact
        info = orig_step()
        live = [r for r in engine.running]
        used += sum(engine.pool.lengths[r.id] for r in live)
        paged += sum(len(engine.pool.tables[r.id]) * block_size for r in live)
        full += len(live) * ctx
        exact += sum(len(r.prompt) + r.max_new_tokens for r in live)
        return info

    engine.step = step  # type: ignore[method-assign]
    replay(engine, requests, step_time=lambda info: 0.01)
    return {"paged": 1 - used / paged, "contiguous_context": 1 - used / full,
            "contiguous_request": 1 - used / exact}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    base = base_config(config.base)
    ctx = max(max(config.lengths), base.context_length)
    heads = sorted({base.n_heads, base.kv_heads, 1}, reverse=True)
    rows: list[dict[str, Any]] = []
    for hkv in heads:
        m = random_model(base, seed, n_kv_heads=hkv, context_length=ctx)
        for t in config.lengths:
            pred = t * m.config.kv_cache_bytes_per_token(4)
            meas = measured_cache_bytes(m, t, seed)
            rows.append({"n_kv_heads": hkv, "length": t, "predicted": pred, "measured": meas,
                         "rel_error": (meas - pred) / pred})
    trace_ctx = base.context_length
    waste = {}
    for bs in config.block_sizes:
        reqs = poisson_trace(config.trace_requests, config.trace_rate,
                             np.random.default_rng(seed), vocab_size=base.vocab_size,
                             prompt_len=(1, trace_ctx // 2), new_tokens=(1, trace_ctx // 2))
        waste[bs] = fragmentation(trace_ctx, base, bs, reqs, config.max_batch)
    per_token: dict[str, dict[str, float]] = {}
    for hkv in heads:  # the slope of measured bytes vs t: the fixed array headers drop out
        rs = [r for r in rows if r["n_kv_heads"] == hkv]
        slope, fixed = np.polyfit([r["length"] for r in rs], [r["measured"] for r in rs], 1)
        pred = rs[0]["predicted"] // rs[0]["length"]
        per_token[str(hkv)] = {"predicted": pred, "measured": float(slope),
                               "fixed_bytes": float(fixed), "rel_error": (slope - pred) / pred}
    return {"rows": rows, "n_heads": base.n_heads, "per_token": per_token,
            "max_abs_slope_error": max(abs(v["rel_error"]) for v in per_token.values()),
            "longest_rel_error": max(abs(r["rel_error"]) for r in rows
                                     if r["length"] == max(config.lengths)),
        "context_length": trace_ctx, "waste": {str(k): v for k, v in waste.items()},
        "table": {"columns": ["block size", "paged waste", "contiguous (context) waste",
                              "contiguous (request) waste"],
                  "rows": [[bs, f"{w['paged']:.1%}", f"{w['contiguous_context']:.1%}",
                            f"{w['contiguous_request']:.1%}"] for bs, w in waste.items()]}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(1, 2, width=9.0, height=3.4)
    by_h: dict[int, list[dict[str, Any]]] = {}
    for r in results["rows"]:
        by_h.setdefault(r["n_kv_heads"], []).append(r)
    for i, (h, rs) in enumerate(sorted(by_h.items(), reverse=True)):
        t = [r["length"] for r in rs]
        ax[0].plot(t, [r["predicted"] / 2**20 for r in rs], color=PALETTE[i], lw=1.0,
                   label=f"Hkv = {h} predicted")
        ax[0].plot(t, [r["measured"] / 2**20 for r in rs], "o", color=PALETTE[i], ms=4,
                   label=f"Hkv = {h} measured")
    ax[0].set_xlabel("cached positions t")
    ax[0].set_ylabel("cache size (MiB, float32)")
    ax[0].set_title(f"{results['n_heads']} query heads", fontsize=9)
    ax[0].legend(fontsize=6)
    w = results["waste"]
    bs = list(w)
    x = np.arange(len(bs))
    for j, (key, label) in enumerate([("paged", "paged"), ("contiguous_request",
                                      "contiguous, prompt + max_new"),
                                     ("contiguous_context", "contiguous, full context")]):
        ax[1].bar(x + (j - 1) * 0.27, [100 * w[b][key] for b in bs], 0.27, color=PALETTE[j],
                  label=label)
    ax[1].set_xticks(x, bs)
    ax[1].set_xlabel("block size (positions)")
    ax[1].set_ylabel("allocated but empty (%)")
    ax[1].legend(fontsize=6)
    return {"cache_memory": fig}


def check(results: dict[str, Any]) -> None:
    assert results["max_abs_slope_error"] < 0.01, results["per_token"]
    assert results["longest_rel_error"] < 0.05, results["longest_rel_error"]
    w = results["waste"]
    assert w["1"]["paged"] < 1e-12  # one-position blocks waste nothing
    small = min((b for b in w if int(b) > 1), key=int)
    assert w[small]["paged"] < w[small]["contiguous_request"]  # small blocks beat reservation
    for v in w.values():
        assert v["contiguous_request"] < v["contiguous_context"]


EXPERIMENT = Experiment(
    name="inference_cache_memory", stage=17,
    title="KV-cache bytes per token (predicted vs measured) and paged vs contiguous waste",
    # quick: lengths from 512 on, where small kernel state no longer varies with t (with the
    # stand-in's 128 bytes per token, a few hundred stray bytes tilt the fitted slope by 1 %)
    quick=Config(base="standin", lengths=(512, 768, 1024), trace_requests=20,
                 block_sizes=(1, 4, 8), max_batch=8),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("max |measured - predicted| / predicted, bytes per token",
                        r["max_abs_slope_error"])],
)
