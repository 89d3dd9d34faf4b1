"""GPTQ layer by layer: reconstruction error on held-out inputs, and against optimal rounding.

For every Linear of the model, inputs are recorded from the float model on calibration
windows (training split, per seed) and on held-out windows (validation split). GPTQ
(act-order, per channel) and RTN quantize the weight; the relative error
‖X_val (W − Ŵ)ᵀ‖² / ‖X_val Wᵀ‖² is measured on the held-out inputs. On a layer small enough
to search exhaustively — the first ``tiny_in`` inputs of ``tiny_rows`` rows of the first
FFN's down projection — every rounding of every row to one of the four nearest grid points
(4^tiny_in per row) is tried, and GPTQ's and RTN's objective (w − ŵ)ᵀ H (w − ŵ) is compared
with the best. Last, GPTQ's loss over columns on that FFN layer (all of it): the OBS loss
increase of each column in processing order, accumulated, in natural and act-order, beside
RTN's loss ½ Σ_rows δᵀ(H + λI)δ on the same damped Hessian. Chapter: stage 18, "GPTQ".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.quant.common import calibration, fmt, layer_inputs, load
from spiral.plotting import PALETTE, new_figure
from spiral.quant import dequantize, gptq_quantize, hessian, quantize
from spiral.quant.gptq import damped, grid


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    standin_steps: int = 300
    bits: int = 4
    seeds: tuple[int, ...] = (0, 1, 2)
    calib_windows: int = 16
    heldout_windows: int = 16
    tiny_in: int = 8
    tiny_rows: int = 16


def _rel(x: np.ndarray, w: np.ndarray, wq: np.ndarray) -> float:
    return float(np.sum((x @ (w - wq).T) ** 2) / np.sum((x @ w.T) ** 2))


def _exhaustive(w: np.ndarray, h: np.ndarray, bits: int) -> dict[str, Any]:
    """Per row: the best of the 4^n roundings to the four nearest grid points."""
    s, _ = grid(w, bits, True, "channel", 128)
    hd = h + 1e-8 * np.eye(len(h))
    ratios_gptq, ratios_rtn = [], []
    q_g = dequantize(gptq_quantize(w, h, bits, percdamp=0.0, blocksize=len(h)))
    q_r = dequantize(quantize(w, bits, granularity="channel"))
    qmax = 2 ** (bits - 1) - 1
    for r in range(w.shape[0]):
        base = np.floor(w[r] / s[r])
        cands = np.clip(base[None, :] + np.array([-1, 0, 1, 2])[:, None], -qmax, qmax)
        combos = np.array(list(itertools.product(range(4), repeat=w.shape[1])))
        qs = cands[combos, np.arange(w.shape[1])] * s[r]  # (4^n, n)
        d = w[r] - qs
        best = float(np.min(np.einsum("ki,ij,kj->k", d, hd, d)))
        e_g, e_r = w[r] - q_g[r], w[r] - q_r[r]
        ratios_gptq.append(float(e_g @ hd @ e_g) / best)
        ratios_rtn.append(float(e_r @ hd @ e_r) / best)
    return {"gptq_over_opt": mean_sd(ratios_gptq), "rtn_over_opt": mean_sd(ratios_rtn),
            "gptq_optimal_share": float(np.mean(np.isclose(ratios_gptq, 1.0)))}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config
    model = load(c.base, c.standin_steps).model
    T = model.context_length
    held = layer_inputs(model, calibration(c.heldout_windows, T, 12345, split="val"))
    mods = dict(model.named_modules())
    layers: dict[str, dict[str, list[float]]] = {n: {"rtn": [], "gptq": []} for n in held}
    for seed in c.seeds:
        cal = layer_inputs(model, calibration(c.calib_windows, T, seed))
        for n in held:
            w = mods[n].weight.data.astype(np.float64)
            xg = held[n].astype(np.float64)
            wg = dequantize(gptq_quantize(w, hessian(cal[n]), c.bits, act_order=True))
            layers[n]["gptq"].append(_rel(xg, w, wg))
            if seed == c.seeds[0]:
                layers[n]["rtn"].append(_rel(xg, w, dequantize(quantize(
                    w, c.bits, granularity="channel"))))
    summary: dict[str, dict[str, Any]] = {
        n: {"rtn": v["rtn"][0], "gptq": mean_sd(v["gptq"])} for n, v in layers.items()}
    never_worse = all(max(v["gptq"]["values"]) <= v["rtn"] for v in summary.values())
    tiny_name = next(n for n in held if n.endswith(("ffn.w2", "ffn.proj")))
    cal0 = layer_inputs(model, calibration(c.calib_windows, T, c.seeds[0]))
    wt = mods[tiny_name].weight.data.astype(np.float64)[:c.tiny_rows, :c.tiny_in]
    tiny = _exhaustive(wt, hessian(cal0[tiny_name][:, :c.tiny_in]), c.bits)
    wf = mods[tiny_name].weight.data.astype(np.float64)
    h = hessian(cal0[tiny_name])
    columns: dict[str, Any] = {}
    for label, ao in (("natural order", False), ("act-order", True)):
        losses: list[float] = []
        gptq_quantize(wf, h, c.bits, act_order=ao, column_losses=losses)
        columns[label] = np.cumsum(losses).tolist()
    d = wf - dequantize(quantize(wf, c.bits, granularity="channel"))
    columns["rtn_total"] = float(0.5 * np.einsum("ri,ij,rj->", d, damped(h), d))
    rows = [[n, f"{v['rtn']:.5f}", fmt(v["gptq"], 5),
             f"{v['gptq']['mean'] / v['rtn']:.2f}"] for n, v in summary.items()]
    return {"layers": summary, "never_worse": never_worse, "tiny": tiny, "columns": columns,
            "tiny_layer": tiny_name, "gptq_over_rtn": mean_sd(
                [v["gptq"]["mean"] / v["rtn"] for v in summary.values()]),
            "table": {"columns": ["layer", "RTN rel. error", "GPTQ rel. error", "GPTQ / RTN"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (ax, bx) = new_figure(1, 2, width=8.4, height=3.2,
                               gridspec_kw={"width_ratios": [1.6, 1]})
    names = list(results["layers"])
    y = np.arange(len(names))
    ax.barh(y - 0.2, [results["layers"][n]["rtn"] for n in names], 0.4, color=PALETTE[1],
            label="RTN")
    ax.barh(y + 0.2, [results["layers"][n]["gptq"]["mean"] for n in names], 0.4,
            xerr=[results["layers"][n]["gptq"]["sd"] for n in names], color=PALETTE[2],
            label="GPTQ (mean ± sd over calibration sets)")
    ax.set_yticks(y, names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("held-out relative output error ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖²")
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    cols = results["columns"]
    for i, k in enumerate(("natural order", "act-order")):
        bx.plot(np.arange(1, len(cols[k]) + 1), cols[k], color=PALETTE[2 + i], lw=1.2,
                label=f"GPTQ, {k}")
    bx.axhline(cols["rtn_total"], color=PALETTE[1], ls="--", lw=1, label="RTN (total)")
    bx.set_xlabel(f"columns of {results['tiny_layer']} quantized")
    bx.set_ylabel("accumulated loss ½δᵀHδ")
    bx.legend(fontsize=6)
    return {"gptq_layers": fig}


def check(results: dict[str, Any]) -> None:
    assert results["never_worse"]
    t = results["tiny"]
    assert t["gptq_over_opt"]["mean"] >= 1 - 1e-9 and t["rtn_over_opt"]["mean"] >= 1 - 1e-9
    assert t["gptq_over_opt"]["mean"] <= t["rtn_over_opt"]["mean"]
    cols = results["columns"]
    assert max(cols["natural order"][-1], cols["act-order"][-1]) < cols["rtn_total"]


EXPERIMENT = Experiment(
    name="quant_gptq_layers", stage=18, title="GPTQ vs RTN per layer; vs optimal rounding",
    quick=Config(base="standin", standin_steps=200, seeds=(0,), calib_windows=8,
                 heldout_windows=8, tiny_in=6, tiny_rows=4),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("GPTQ/RTN held-out error", r["gptq_over_rtn"]["mean"]),
                       ("GPTQ/optimal (tiny)", r["tiny"]["gptq_over_opt"]["mean"])],
)
