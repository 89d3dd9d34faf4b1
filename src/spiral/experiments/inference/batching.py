"""Continuous vs static batching on a synthetic Poisson trace: throughput and latency.

Requests arrive as a Poisson process (rate λ) with prompt and output lengths drawn
uniformly over wide ranges, so some finish long before others. Both policies run the same
engine, the same paged cache and the same batched decode step; only admission differs:
static batching fills the batch only when it is empty, continuous batching refills every
free slot at every iteration. The replay clock advances by each iteration's cost under a
model fitted to best-of timings of this engine's steps, a + b·(rows decoded) +
p·(tokens prefilled) — exact and repeatable on a loaded machine — and, as a witness, by
each iteration's measured wall time (load average recorded). Throughput = generated
tokens / makespan; latency = finish − arrival, p50 and p99 over the trace; mean ± sd over three
traces (seeds). The gain: continuous batching produces the same tokens in fewer, fuller
steps; each step has a fixed cost a (the weights are read once whatever the batch), so the
throughput gain is a·(steps saved) over the total cost — large when a dominates the
per-row cost b, near 1 when b does. Chapter: stage 17.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.inference.common import (
    base_config,
    load_average,
    one_blas_thread,
    random_model,
)
from spiral.inference import Engine, KVCache, forward_batch, forward_cached, poisson_trace, replay
from spiral.inference.roofline import best_time
from spiral.plotting import PALETTE, new_figure

POLICIES = ("static", "continuous")
METRICS = ("throughput", "p50", "p99", "mean_batch", "steps")


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    n_requests: int = 64
    rate: float = 200.0  # requests per second: faster than the engine serves them
    prompt_len: tuple[int, int] = (8, 64)
    new_tokens: tuple[int, int] = (8, 128)
    max_batch: int = 16
    block_size: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)


def fit_step_cost(model: Any, max_batch: int, repeats: int = 7) -> dict[str, float]:
    """Seconds per iteration ≈ a + b·(rows decoded) + p·(tokens prefilled), from best-of
    timings of decode steps at B = 1 and B = max_batch and prefills of 1 and 16 tokens."""
    ids = np.ones((max_batch, 17), dtype=np.int64)

    def decode(B: int) -> float:
        caches = [KVCache.for_model(model, capacity=17) for _ in range(B)]
        for c in caches:
            forward_cached(model, ids[:1, :16], c)

        def step() -> None:
            for c in caches:
                c.truncate(16)
            forward_batch(model, ids[:B, 16:], caches)
        return best_time(step, repeats)

    def prefill(T: int) -> float:
        return best_time(lambda: forward_cached(model, ids[:1, :T], KVCache.for_model(model)),
                         repeats)

    d1, dB = decode(1), decode(max_batch)
    b = max((dB - d1) / (max_batch - 1), 0.0)
    p = max((prefill(16) - prefill(1)) / 15, 0.0)
    return {"a": d1 - b, "b": b, "p": p}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    with one_blas_thread():  # timings: one BLAS thread (see common.one_blas_thread)
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    cfg = base_config(config.base)
    model = random_model(cfg, int(rng.integers(1 << 30)))  # speed does not need trained weights
    ctx = cfg.context_length
    blocks = config.max_batch * -(-ctx // config.block_size)
    load = load_average()
    cost = fit_step_cost(model, config.max_batch)

    def clock(info: Any) -> float:
        return cost["a"] + cost["b"] * info.decoded + cost["p"] * info.prefill_tokens

    per_seed: list[dict[str, Any]] = []
    timelines: dict[str, list[tuple[float, int, int]]] = {}
    for seed in config.seeds:
        row: dict[str, Any] = {"seed": seed}
        def trace(seed: int = seed) -> list[Any]:
            return poisson_trace(config.n_requests, config.rate, np.random.default_rng(seed),
                                 vocab_size=cfg.vocab_size, prompt_len=config.prompt_len,
                                 new_tokens=config.new_tokens)

        for policy in POLICIES:
            reqs = trace()
            engine = Engine(model, blocks, config.block_size, config.max_batch, policy)
            res = replay(engine, reqs, step_time=clock)
            row[policy] = res.to_dict()
            if seed == config.seeds[0]:
                timelines[policy] = res.timeline
            wall = replay(Engine(model, blocks, config.block_size, config.max_batch, policy),
                          trace())
            row[f"{policy}_wall_clock"] = wall.to_dict()
        row["gain"] = row["continuous"]["throughput"] / row["static"]["throughput"]
        # both policies decode the same rows and prefill the same prompts, so on the fitted
        # clock their busy times differ by a·(steps saved) alone: the gain, predicted
        st, co = row["static"], row["continuous"]
        row["predicted_gain"] = st["makespan"] / (st["makespan"]
                                                  - cost["a"] * (st["steps"] - co["steps"]))
        per_seed.append(row)
    summary = {p: {m: mean_sd([r[p][m] for r in per_seed]) for m in METRICS}
               for p in POLICIES}
    gain = mean_sd([r["gain"] for r in per_seed])
    wall_gain = mean_sd([r["continuous_wall_clock"]["throughput"] /
                         r["static_wall_clock"]["throughput"] for r in per_seed])
    predicted = mean_sd([r["predicted_gain"] for r in per_seed])
    return {"per_seed": per_seed, "summary": summary, "gain": gain, "predicted_gain": predicted,
            "timelines": timelines,
            "step_cost": cost, "wall_clock_gain": wall_gain,
            "load_average": [load, load_average()],
            "table": {"columns": ["policy", "throughput (tok/s)", "p50 latency (s)",
                                  "p99 latency (s)", "mean batch", "steps"],
                      "rows": [[p] + [_fmt(summary[p][m]) for m in METRICS]
                               for p in POLICIES]}}


def _fmt(s: dict[str, Any]) -> str:
    return f"{s['mean']:.3g} ± {s['sd']:.2g}" if s["n"] > 1 else f"{s['mean']:.3g} (one run)"


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(2, 1, width=7.0, height=4.6, sharex=True)
    for j, p in enumerate(POLICIES):
        tl = results["timelines"][p]
        ax[j].step([t for t, _, _ in tl], [b for _, b, _ in tl], where="post",
                   color=PALETTE[j], lw=0.8)
        s = results["summary"][p]
        ax[j].set_title(f"{p}: {s['throughput']['mean']:.0f} tok/s, "
                        f"p99 latency {s['p99']['mean']:.2f} s", fontsize=8)
        ax[j].set_ylabel("requests in the step")
    ax[1].set_xlabel("replay clock (s): the first trace, fitted step costs")
    return {"batching_timeline": fig}


def check(results: dict[str, Any]) -> None:
    # the scheduling claim, whatever the step costs: the same tokens in fewer, fuller steps
    for r in results["per_seed"]:
        c, st = r["continuous"], r["static"]
        assert c["tokens"] == st["tokens"] and c["steps"] < st["steps"], r
        assert c["mean_batch"] > st["mean_batch"], r
    # the throughput gain is a·(steps saved) over the total cost: > 1 when a step has a fixed
    # cost a > 0; close to 1 when the per-row cost b dominates (never clearly below)
    assert results["gain"]["mean"] > 0.98, results["gain"]


EXPERIMENT = Experiment(
    name="inference_batching", stage=17,
    title="Continuous vs static batching on a Poisson trace",
    quick=Config(base="standin", n_requests=24, rate=5000.0, prompt_len=(2, 8),
                 new_tokens=(2, 22), max_batch=8, block_size=4, seeds=(0,)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("throughput gain (continuous / static)", r["gain"]["mean"])],
)
