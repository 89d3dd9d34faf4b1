"""What fits: the largest batch per budget, which term dominates where, and famous models.

Three uses of the analytic model, each cheap enough to need no run, then checked where
a run is affordable:

* the largest batch of the baby model under a few budgets, found by bisection on the
  predicted peak and verified by running B* and B* + 1 under tracemalloc;
* a phase diagram over width × context: which term is largest at the peak, the weights'
  (parameters + gradients + Adam), the activations linear in T, or the B·H·T² attention
  probabilities (4 layers, head_dim 32, batch 8);
* GPT-2 small (124M), a Llama-3.2-1B-like and a Llama-2-7B-like model, one sequence of
  their full context, in float32 and in mixed precision, training and inference.

Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.models.gpt import GPTConfig, count_parameters
from spiral.plotting import PALETTE, new_figure
from spiral.profiling.memory import (
    build_gpt_graph,
    bytes_per_parameter,
    famous_configs,
    largest_batch,
    predict_inference_memory,
    predict_training_memory,
    verify_fit,
)

GiB, MiB = 2**30, 2**20
TERMS = ("weights + grads + Adam", "activations ∝ T", "attention ∝ T²")


@dataclass(frozen=True)
class Config:
    budgets_mib: tuple[int, ...] = (32, 64, 128)
    context: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    contexts: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
    phase_batch: int = 8
    phase_layers: int = 4
    famous: tuple[str, ...] = ("gpt2-124M", "llama-1B", "llama-7B")
    device_gib: int = 80


def _dominant(c: GPTConfig, B: int, T: int) -> tuple[int, list[float]]:
    nodes = build_gpt_graph(c, B, T)
    weights = sum(n.numel for n in nodes if n.param) * 16  # fp32 AdamW: 4 + 4 + 8
    scores = sum(n.saved for n in nodes if n.name.endswith("attn.sdpa"))
    linear = sum(n.out + n.saved for n in nodes if not n.param) - scores
    vals = [float(weights), float(linear), float(scores)]
    return int(np.argmax(vals)), vals


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    baby = GPTConfig.preset("baby", 65)
    fits = []
    for mib in config.budgets_mib:
        b = largest_batch(baby, mib * MiB, config.context)
        v = verify_fit(baby, mib * MiB, b, config.context, seed=seed)
        fits.append({"budget_mib": mib, "batch": b, "peak_mib": v["peak"] / MiB,
                     "next_peak_mib": v["peak_next"] / MiB, "fits": v["fits"],
                     "next_exceeds": v["next_exceeds"]})
    grid = np.zeros((len(config.widths), len(config.contexts)), dtype=int)
    for i, w in enumerate(config.widths):
        c = GPTConfig(vocab_size=65, context_length=max(config.contexts),
                      n_layers=config.phase_layers, n_heads=max(1, w // 32), d_model=w)
        for j, t in enumerate(config.contexts):
            grid[i, j] = _dominant(c, config.phase_batch, t)[0]
    famous, rows = {}, []
    for name in config.famous:
        c = famous_configs()[name]
        T = c.context_length
        entry: dict[str, Any] = {"params": count_parameters(c), "context": T}
        for prec in ("fp32", "mixed"):
            tr = predict_training_memory(c, 1, T, "adamw", prec)
            inf = predict_inference_memory(c, 1, T, "fp32" if prec == "fp32" else "bf16")
            fit = largest_batch(c, config.device_gib * GiB, T, "adamw", prec, max_batch=4096)
            entry[prec] = {"train_gib": tr.peak / GiB, "resident_gib":
                           (tr.params + tr.optimizer_state) / GiB + tr.grads / GiB,
                           "activations_gib": tr.activations_end_of_forward / GiB,
                           "inference_gib": inf.peak_visible / GiB,
                           "largest_batch": fit}
            rows.append([name, f"{entry['params'] / 1e6:,.0f}M", prec, f"{T:,}",
                         f"{bytes_per_parameter('adamw', prec)}",
                         f"{entry['params'] * bytes_per_parameter('adamw', prec) / GiB:,.1f}",
                         f"{tr.activations_end_of_forward / GiB:,.1f}",
                         f"{tr.peak / GiB:,.1f}", f"{inf.peak_visible / GiB:,.1f}", str(fit)])
        famous[name] = entry
    return {
        "fits": fits,
        "fit_table": {"columns": ["budget (MiB)", "largest batch B*", "tracemalloc at B* (MiB)",
                                  "at B* + 1 (MiB)"],
                      "rows": [[f["budget_mib"], f["batch"], f"{f['peak_mib']:.1f}",
                                f"{f['next_peak_mib']:.1f}"] for f in fits]},
        "phase": {"widths": list(config.widths), "contexts": list(config.contexts),
                  "grid": grid.tolist(), "terms": list(TERMS), "batch": config.phase_batch,
                  "layers": config.phase_layers},
        "famous": famous,
        "famous_table": {"columns": ["model", "params", "precision", "context T",
                                     "bytes / param", "weights + grads + Adam (GiB)",
                                     "activations, B = 1 (GiB)", "training peak (GiB)",
                                     "inference (GiB)",
                                     f"largest B in {config.device_gib} GiB"], "rows": rows},
        "zero_bytes_per_param_mixed": bytes_per_parameter("adam", "mixed"),
        "bytes_per_param_fp32": bytes_per_parameter("adamw", "fp32"),
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    ph = results["phase"]
    fig, ax = new_figure(1, 1, width=5.6, height=3.6)
    grid = np.array(ph["grid"])
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(PALETTE[:3])
    ax.imshow(grid, origin="lower", cmap=cmap, vmin=0, vmax=2, aspect="auto")
    ax.set_xticks(range(len(ph["contexts"])), [str(t) for t in ph["contexts"]])
    ax.set_yticks(range(len(ph["widths"])), [str(w) for w in ph["widths"]])
    ax.set_xlabel("context T")
    ax.set_ylabel("d_model (head_dim 32)")
    for k, term in enumerate(ph["terms"]):
        ax.plot([], [], "s", color=PALETTE[k], label=term)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"largest term at the peak ({ph['layers']} layers, B = {ph['batch']}, "
                 "fp32 AdamW)", fontsize=9)
    return {"phase": fig}


def check(results: dict[str, Any]) -> None:
    for f in results["fits"]:
        assert f["fits"] and f["next_exceeds"], f
    grid = np.array(results["phase"]["grid"])
    assert grid[-1, 0] == 0 and grid[0, -1] == 2  # wide and short: weights; long: T²
    assert results["zero_bytes_per_param_mixed"] == 16


EXPERIMENT = Experiment(
    name="memory_budget", stage=11, title="Largest batch, dominant terms, famous models",
    quick=Config(budgets_mib=(24,), widths=(32, 256, 2048), contexts=(16, 256, 2048),
                 famous=("gpt2-124M",)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("largest batches", [f["batch"] for f in r["fits"]])],
)
