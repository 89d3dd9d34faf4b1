"""The α–β cost model at scale: two published measurements, where each strategy stops
scaling for GPT-2 124M and a 7B model, and which layout wins where.

(1) Shoeybi et al. (2019) Megatron-LM weak scaling on DGX-2H V100s, predicted from the
one-GPU baseline (39 TFLOP/s) and the data-sheet links. (2) On DGX A100 nodes, with an
assumed matrix-product efficiency e (fraction of peak), the parallel efficiency of pure
data parallelism, ZeRO-3, tensor and pipeline parallelism at N = 1 … 4096, and the largest
N at which each still keeps half of the one-device throughput, fits in 80 GB and is
feasible. (3) For model sizes × device counts, the fastest of DP, ZeRO-3, TP×DP and
TP×PP×DP layouts that fits. Chapter: stage 13, "DP × TP × PP at scale".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.distributed import cost
from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    cluster: str = "dgx-a100"
    efficiency: float = 0.5
    max_devices: int = 4096
    batches: tuple[tuple[str, int], ...] = (("gpt2-124m", 512), ("llama-7b", 1024))
    map_sizes: tuple[float, ...] = (0.124e9, 1.3e9, 7e9, 70e9, 175e9)
    map_devices: tuple[int, ...] = (8, 64, 512, 4096)


def _shape(n_params: float) -> cost.ModelShape:
    # width from P ≈ 12·L·h² with L = h/128 (GPT-3's aspect ratios, roughly)
    h = int(round((n_params * 128 / 12) ** (1 / 3) / 128) * 128)
    layers = max(2, int(round(n_params / (12 * h * h))))
    return cost.ModelShape(f"{n_params / 1e9:g}B", n_params, layers, h, max(1, h // 128), 2048)


def _best(m: cost.ModelShape, c: cost.Cluster, n: int, batch: int, e: float) -> str:
    best, best_tps = "none fits", 0.0
    for name, lay in (("DP", cost.Layout(dp=n, recompute=True)),
                      ("ZeRO-3", cost.Layout(dp=n, zero=3, recompute=True)),
                      ("TP8×DP", cost.Layout(tp=8, dp=n // 8, recompute=True)),
                      ("TP8×PP×DP", None)):
        if lay is None:
            for p in (2, 4, 8, 16, 32, 64):
                if n % (8 * p) == 0:
                    cand = cost.Layout(tp=8, pp=p, dp=n // (8 * p), recompute=True)
                    r = cost.step_cost(m, c, cand, batch, e)
                    if r["fits"] and r["feasible"] and r["tokens_per_s"] > best_tps:
                        best, best_tps = f"TP8×PP{p}×DP", r["tokens_per_s"]
            continue
        if lay.dp < 1 or batch < lay.dp:
            continue
        r = cost.step_cost(m, c, lay, batch, e)
        if r["fits"] and r["feasible"] and r["tokens_per_s"] > best_tps:
            best, best_tps = name, r["tokens_per_s"]
    return best


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = cost.CLUSTERS[config.cluster]
    repro = cost.published_reproductions()
    limits, curves = [], {}
    for key, batch in config.batches:
        m = cost.MODELS[key]
        for kind in ("dp", "zero3", "tp", "pp"):
            r = cost.scaling_limit(m, c, kind, batch, config.efficiency, config.max_devices)
            limits.append([m.name, kind, r["limit"], r["why"]])
            curves[f"{key}/{kind}"] = r["curve"]
    grid = [[_best(_shape(p), c, n, 1024, config.efficiency) for n in config.map_devices]
            for p in config.map_sizes]
    return {
        "reproductions": {"columns": ["measurement (Megatron-LM 2019)", "published",
                                      "predicted", "relative error"],
                          "rows": [[r["measurement"], f"{r['published']:.2f}",
                                    f"{r['predicted']:.2f}", f"{r['relative_error']:+.0%}"]
                                   for r in repro]},
        "worst_reproduction_error": max(abs(float(r["relative_error"])) for r in repro),
        "limits": {"columns": ["model", "strategy", "largest useful N", "what stops it"],
                   "rows": limits},
        "limit": {f"{k}/{kind}": lim for (k, _), kind, lim in
                  zip([b for b in config.batches for _ in range(4)],
                      ["dp", "zero3", "tp", "pp"] * len(config.batches),
                      [row[2] for row in limits])},
        "curves": curves,
        "winner_map": {"columns": ["parameters"] + [f"N = {n}" for n in config.map_devices],
                       "rows": [[f"{p / 1e9:g}B"] + row for p, row in
                                zip(config.map_sizes, grid)]},
        "efficiency_assumed": config.efficiency, "cluster": config.cluster,
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 2, width=7.6, height=3.4, sharey=True)
    for ax, key in zip(axes, ("gpt2-124m", "llama-7b")):
        for color, kind in zip(PALETTE, ("dp", "zero3", "tp", "pp")):
            pts = [p for p in results["curves"][f"{key}/{kind}"] if p["feasible"]]
            if not pts:
                continue
            n = [p["n"] for p in pts]
            e = [p["efficiency"] for p in pts]
            ax.plot(n, e, "-", color=color)
            bad = [(p["n"], p["efficiency"]) for p in pts if not p["fits"]]
            if bad:
                ax.plot(*zip(*bad), "x", color=color)
            direct_label(ax, n, e, kind, color=color)
        ax.axhline(0.5, color=PALETTE[6], lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices N (DGX A100, model)")
        ax.set_title(cost.MODELS[key].name + " (× = does not fit)", fontsize=9)
    axes[0].set_ylabel("parallel efficiency")
    return {"scaling_predicted": fig}


def check(results: dict[str, Any]) -> None:
    assert results["worst_reproduction_error"] < 0.15
    lim = results["limit"]
    assert lim["gpt2-124m/tp"] < lim["gpt2-124m/dp"]  # TP stops far earlier for a small model
    assert lim["llama-7b/dp"] == 0  # plain DP cannot hold 7B's 16 bytes/parameter in 80 GB


EXPERIMENT = Experiment(
    name="distributed_cost_map", stage=13, title="The cost model at scale",
    quick=Config(max_devices=1024, map_sizes=(0.124e9, 7e9), map_devices=(8, 512)),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("worst reproduction error", r["worst_reproduction_error"])],
)
