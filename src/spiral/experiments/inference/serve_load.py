"""A bounded load test of ``spiral serve``: concurrent clients, a fixed number of requests.

The server (Starlette + uvicorn, the continuous-batching engine behind it) runs in a thread
on an ephemeral loopback port; :func:`spiral.inference.loadtest.load_test` sends every
request from a fixed list of validation-text prompts through ``n_clients`` closed-loop
clients, for several client counts. Reported per client count: completed and failed
requests, completion tokens per second, p50 and p99 latency; a shared machine, so the
load average is recorded. Chapter: stage 17.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.inference.common import (
    load_average,
    load_base,
    one_blas_thread,
    val_prompts,
)
from spiral.inference.loadtest import load_test
from spiral.inference.serve import ServeConfig, build_app
from spiral.inference.serve_cli import ServerThread
from spiral.plotting import PALETTE, new_figure
from spiral.tokenizers import ByteTokenizer


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    clients: tuple[int, ...] = (1, 2, 4, 8)
    n_requests: int = 32
    prompt_len: int = 24
    max_tokens: int = 64
    max_batch: int = 8
    standin_steps: int = 60


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    with one_blas_thread():  # timings: one BLAS thread (see common.one_blas_thread)
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    pre = load_base(config.base, steps=config.standin_steps)
    tok = ByteTokenizer()
    prompts = [tok.decode(p) for p in val_prompts(config.n_requests, config.prompt_len, rng)]
    load = load_average()
    app = build_app(pre.model, pre.tokenizer, "served", ServeConfig(max_batch=config.max_batch))
    rows = []
    with ServerThread(app) as url:
        for n in config.clients:
            rows.append(load_test(url, "served", prompts, n_clients=n,
                                  max_tokens=config.max_tokens))
    return {"rows": rows, "load_average": [load, load_average()],
            "table": {"columns": ["clients", "completed", "errors", "tokens/s",
                                  "p50 latency (s)", "p99 latency (s)"],
                      "rows": [[r["n_clients"], f"{r['completed']}/{r['requests']}",
                                r["errors"], f"{r['tokens_per_s']:.0f}", f"{r['p50_s']:.2f}",
                                f"{r['p99_s']:.2f}"] for r in rows]}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["rows"]
    n = [r["n_clients"] for r in rows]
    fig, ax = new_figure(1, 2, width=8.4, height=3.2)
    ax[0].plot(n, [r["tokens_per_s"] for r in rows], "o-", color=PALETTE[0])
    ax[0].set_xlabel("concurrent clients")
    ax[0].set_ylabel("completion tokens per second")
    ax[1].plot(n, [r["p50_s"] for r in rows], "o-", color=PALETTE[1], label="p50")
    ax[1].plot(n, [r["p99_s"] for r in rows], "s--", color=PALETTE[2], label="p99")
    ax[1].set_xlabel("concurrent clients")
    ax[1].set_ylabel("latency (s)")
    ax[1].legend(fontsize=7)
    ax[1].set_title(f"1-min load average {results['load_average'][0][0]:.1f}", fontsize=8)
    return {"serve_load": fig}


def check(results: dict[str, Any]) -> None:
    for r in results["rows"]:
        assert r["errors"] == 0 and r["completed"] == r["requests"], r
    rows = results["rows"]
    assert rows[-1]["tokens_per_s"] > rows[0]["tokens_per_s"]  # batching serves more


EXPERIMENT = Experiment(
    name="inference_serve_load", stage=17,
    title="Load test of spiral serve: throughput and latency vs concurrent clients",
    quick=Config(base="standin", clients=(1, 4), n_requests=8, prompt_len=6, max_tokens=12,
                 max_batch=4, standin_steps=5),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"tokens/s with {x['n_clients']} clients", x["tokens_per_s"])
                       for x in r["rows"]],
)
