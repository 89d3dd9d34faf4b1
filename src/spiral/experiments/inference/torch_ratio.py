"""Our cached decode step beside PyTorch's: the same model in Hugging Face transformers.

The base model's shape (random weights; speed does not depend on their values) is exported
to a Llama folder (:func:`spiral.hub.api.export`) and loaded by transformers on PyTorch,
whose decode keeps its own KV cache (``DynamicCache``). At each context length t both
prefill t − 1 tokens (untimed) and then one decode step is timed, best of ``repeats``; the
two steps' logits are compared (the same model, so they must agree to float32 rounding).
Both run on one thread. Reported: each step's time and the ratio ours / PyTorch; a shared
machine, so the load average is recorded. Needs torch and transformers (the hub extra).
Chapter: stage 17.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.inference.common import (
    base_config,
    load_average,
    one_blas_thread,
    random_model,
)
from spiral.hub.api import export
from spiral.inference import KVCache, forward_cached
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    lengths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    repeats: int = 21   # a cached step takes milliseconds: one busy moment spoils a few


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    with one_blas_thread():  # timings: one BLAS thread (see common.one_blas_thread)
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    torch.set_num_threads(1)
    seed = int(rng.integers(1 << 30))
    model = random_model(base_config(config.base), seed, context_length=max(config.lengths))
    folder = tempfile.mkdtemp(prefix="spiral-s17-hf-")
    export(model, folder, family="llama")
    tm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():  # warm-up: the first call pays for lazy initialization
        tm(torch.zeros((1, 4), dtype=torch.long), cache=DynamicCache(), use_cache=True)
    load = load_average()
    rows = []
    for t in config.lengths:
        ids = np.random.default_rng(seed + t).integers(0, model.config.vocab_size, (1, t))
        ours, theirs = np.inf, np.inf
        for _ in range(config.repeats):
            cache = KVCache.for_model(model, capacity=t)
            forward_cached(model, ids[:, :-1], cache)
            t0 = time.perf_counter()
            z_ours = forward_cached(model, ids[:, -1:], cache)[0, -1]
            ours = min(ours, time.perf_counter() - t0)
            with torch.no_grad():
                past = DynamicCache()
                tm(torch.from_numpy(ids[:, :-1]), cache=past, use_cache=True)
                t0 = time.perf_counter()
                out = tm(torch.from_numpy(ids[:, -1:]), cache=past, use_cache=True)
                theirs = min(theirs, time.perf_counter() - t0)
        z_torch = out.logits[0, -1].numpy()
        rows.append({"length": t, "ours_s": ours, "torch_s": theirs, "ratio": ours / theirs,
                     "max_abs_logit_diff": float(np.abs(z_ours - z_torch).max())})
    return {"rows": rows, "load_average": [load, load_average()],
            "torch": torch.__version__,
            "table": {"columns": ["context t", "ours (ms)", "PyTorch (ms)", "ours / PyTorch",
                                  "max |Δ logit|"],
                      "rows": [[r["length"], f"{r['ours_s'] * 1e3:.2f}",
                                f"{r['torch_s'] * 1e3:.2f}", f"{r['ratio']:.2f}×",
                                f"{r['max_abs_logit_diff']:.1e}"] for r in rows]}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["rows"]
    t = [r["length"] for r in rows]
    fig, ax = new_figure(1, 1, width=6.0, height=3.4)
    ax.plot(t, [r["ours_s"] * 1e3 for r in rows], "o-", color=PALETTE[0], label="ours (NumPy)")
    ax.plot(t, [r["torch_s"] * 1e3 for r in rows], "s-", color=PALETTE[1],
            label=f"PyTorch {results['torch']} (transformers, DynamicCache)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length t")
    ax.set_ylabel("one cached decode step (ms, best of repeats)")
    ax.set_title(f"one thread, 1-min load average {results['load_average'][0][0]:.1f}",
                 fontsize=8)
    ax.legend(fontsize=7)
    return {"torch_ratio": fig}


def check(results: dict[str, Any]) -> None:
    for r in results["rows"]:
        assert r["max_abs_logit_diff"] < 1e-3, r  # the same model, float32 rounding apart
        assert r["ours_s"] > 0 and r["torch_s"] > 0


EXPERIMENT = Experiment(
    name="inference_torch_ratio", stage=17,
    title="Our cached decode step vs PyTorch's (transformers) on the same model",
    quick=Config(base="standin", lengths=(32,), repeats=2),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"ours / PyTorch at t = {x['length']}", x["ratio"]) for x in r["rows"]],
)
