"""Weights and activations: outliers, the clipping range chosen, and AWQ's scale search.

For every Linear of the model: the weights' excess kurtosis and max|w|/sd; its inputs'
per-channel max |x| over calibration tokens (the outlier ratio is the largest channel's
max over the median channel's); and the squared error of quantizing those inputs per
tensor at ``act_bits`` bits with the min–max range, the 99.9th percentile, and the
MSE-optimal clip ratio. Then AWQ's grid search: for each group of layers sharing an input,
the output error over α ∈ [0, 1] relative to α = 0 (plain RTN).
Chapter: stage 18, "Calibration and outliers" and "AWQ".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.quant.common import calibration, layer_inputs, load
from spiral.plotting import PALETTE, new_figure
from spiral.quant import awq_search, dequantize, quantize
from spiral.quant.awq import _groups


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    standin_steps: int = 300
    act_bits: int = 4
    awq_bits: int = 4
    group_size: int = 64
    calib_windows: int = 8


def _act_mse(x: np.ndarray, bits: int, method: str) -> tuple[float, float]:
    q = quantize(x.astype(np.float64), bits, granularity="tensor", calibration=method)
    return float(np.mean((dequantize(q) - x) ** 2)), float(q.scale.ravel()[0])


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config
    model = load(c.base, c.standin_steps).model
    mods = dict(model.named_modules())
    xs = layer_inputs(model, calibration(c.calib_windows, model.context_length, 0))
    layers: dict[str, Any] = {}
    for n, x in xs.items():
        w = mods[n].weight.data.astype(np.float64).ravel()
        z = (w - w.mean()) / w.std()
        chan = np.abs(x).max(axis=0)
        clip = {m: _act_mse(x, c.act_bits, m) for m in ("minmax", "percentile", "mse")}
        layers[n] = {"w_kurtosis": float(np.mean(z**4) - 3), "w_max_over_sd": float(
            np.abs(z).max()), "x_outlier_ratio": float(chan.max() / np.median(chan)),
            "x_absmax": float(chan.max()), "clip_mse": {m: v[0] for m, v in clip.items()},
            "clip_range": {m: v[1] * (2 ** (c.act_bits - 1) - 1) for m, v in clip.items()}}
    worst = max(layers, key=lambda n: layers[n]["x_outlier_ratio"])
    hist, edges = np.histogram(xs[worst].ravel(), bins=121)
    awq = {}
    for names, _ in _groups(model):
        x = xs[names[0]]
        ws = [mods[n].weight.data for n in names]
        _, alpha, losses = awq_search(ws, x, c.awq_bits, granularity="group",
                                      group_size=c.group_size)
        awq[" + ".join(n.split(".", 2)[-1] if i else n for i, n in enumerate(names))] = {
            "alpha": alpha, "rel_loss": (losses / losses[0]).tolist()}
    rows = [[n, f"{v['w_kurtosis']:.2f}", f"{v['w_max_over_sd']:.1f}",
             f"{v['x_outlier_ratio']:.1f}", f"{v['clip_mse']['minmax']:.2e}",
             f"{v['clip_mse']['percentile']:.2e}", f"{v['clip_mse']['mse']:.2e}"]
            for n, v in layers.items()]
    return {"layers": layers, "worst": worst, "hist": hist.tolist(), "edges": edges.tolist(),
            "channel_absmax": np.abs(xs[worst]).max(axis=0).tolist(), "awq": awq,
            "table": {"columns": ["layer", "weight excess kurtosis", "max|w|/sd",
                                  "input outlier ratio", f"INT{c.act_bits} input MSE min–max",
                                  "99.9th pct", "MSE-optimal"], "rows": rows},
            "awq_table": {"columns": ["layers sharing an input", "α chosen",
                                      "error at α / error at α = 0"],
                          "rows": [[k, f"{v['alpha']:.2f}", f"{min(v['rel_loss']):.3f}"]
                                   for k, v in awq.items()]}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (a, b) = new_figure(1, 2, width=7.4, height=2.8)
    e = np.asarray(results["edges"])
    a.stairs(np.maximum(results["hist"], 0.5), e, color=PALETTE[0])
    a.set_yscale("log")
    lay = results["layers"][results["worst"]]
    for m, col in (("minmax", PALETTE[1]), ("mse", PALETTE[2])):
        r = lay["clip_range"][m]
        a.axvline(r, color=col, ls="--", lw=1, label=f"{m} range ±{r:.2f}")
        a.axvline(-r, color=col, ls="--", lw=1)
    a.set_title(f"inputs of {results['worst']}", fontsize=7)
    a.set_xlabel("activation value")
    a.set_ylabel("count")
    a.legend(fontsize=6)
    for i, (k, v) in enumerate(results["awq"].items()):
        al = np.linspace(0, 1, len(v["rel_loss"]))
        b.plot(al, v["rel_loss"], color=PALETTE[i % len(PALETTE)], lw=1,
               label=k if i < 6 else None)
    b.axhline(1.0, color="k", lw=0.6, ls=":")
    b.set_xlabel("α  (s = s_x^α)")
    b.set_ylabel("output error / RTN's")
    b.legend(fontsize=5)
    return {"distributions": fig}


def check(results: dict[str, Any]) -> None:
    for v in results["layers"].values():  # the MSE-optimal clip is never worse than min–max
        assert v["clip_mse"]["mse"] <= v["clip_mse"]["minmax"] * (1 + 1e-9)
    assert all(min(v["rel_loss"]) <= 1.0 for v in results["awq"].values())


EXPERIMENT = Experiment(
    name="quant_distributions", stage=18, title="Outliers, clipping and AWQ's scale search",
    quick=Config(base="standin", standin_steps=200, group_size=8, calib_windows=4),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("largest input outlier ratio",
                        r["layers"][r["worst"]]["x_outlier_ratio"])],
)
