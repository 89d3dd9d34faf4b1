"""NF4 against symmetric int4 on the base's real weights: where the codes sit, what they lose.

Every 2-D weight of the base is quantized block-wise (64 weights per block, absmax scale)
two ways: NF4 (Dettmers et al., 2023: 16 normal quantiles, double-quantized scales) and
symmetric int4 (15 evenly spaced levels −7…7 of c/7, fp32 scales). For each matrix the mean
squared reconstruction error of both; for the whole model the histogram of w / c (the weights
in units of their block's absmax) under the 16 NF4 codes and the int4 levels, and the
histograms of the two errors. The 16 NF4 values are computed from the normal quantile
function and compared with the paper's appendix. Chapter: stage 15, "NF4 from normal quantiles".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.finetune.common import STANDIN, fresh_base
from spiral.experiments.framework import Experiment
from spiral.finetune.nf4 import NF4, _blocks, absmax_int4_roundtrip, dequantize_nf4, quantize_nf4
from spiral.plotting import PALETTE, new_figure

# Dettmers et al. (2023), QLoRA, Appendix E: the NF4 data type's 16 values (float32).
PUBLISHED = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
             -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
             0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
             0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0)


@dataclass(frozen=True)
class Config:
    base: str = "spiral-book"
    blocksize: int = 64
    bins: int = 120


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    model = fresh_base(config.base).model
    per: dict[str, Any] = {}
    normed, err_nf4, err_int4 = [], [], []
    for name, p in model.named_parameters():
        if p.data.ndim != 2:
            continue
        w = p.data.astype(np.float32)
        d_nf4 = dequantize_nf4(quantize_nf4(w, config.blocksize))
        d_int4 = absmax_int4_roundtrip(w, config.blocksize)
        b = _blocks(w, config.blocksize)
        c = np.abs(b).max(axis=1, keepdims=True)
        normed.append((b / np.where(c > 0, c, 1)).ravel()[:w.size])
        err_nf4.append((d_nf4 - w).ravel())
        err_int4.append((d_int4 - w).ravel())
        z = (w - w.mean()) / w.std()
        g = w.std() * rng.standard_normal(w.shape).astype(np.float32)  # the normal control
        per[name] = {"shape": list(w.shape), "mse_nf4": float(np.mean(err_nf4[-1] ** 2)),
                     "mse_int4": float(np.mean(err_int4[-1] ** 2)),
                     "excess_kurtosis": float(np.mean(z ** 4) - 3),
                     "gaussian_ratio": _mse(dequantize_nf4(quantize_nf4(g, config.blocksize)), g)
                     / _mse(absmax_int4_roundtrip(g, config.blocksize), g)}
    e4, ei = np.concatenate(err_nf4), np.concatenate(err_int4)
    hist_range = float(np.quantile(np.abs(ei), 0.999))
    edges = np.linspace(-hist_range, hist_range, config.bins + 1)
    out: dict[str, Any] = {
        "matrices": per, "mse_nf4": float(np.mean(e4 ** 2)), "mse_int4": float(np.mean(ei ** 2)),
        "nf4_better_in": sum(v["mse_nf4"] < v["mse_int4"] for v in per.values()),
        "n_matrices": len(per), "codes": NF4.tolist(), "published": list(PUBLISHED),
        "max_code_diff": float(np.abs(NF4 - np.asarray(PUBLISHED)).max()),
        "hist_w": np.histogram(np.concatenate(normed), np.linspace(-1, 1, config.bins + 1)
                               )[0].tolist(),
        "hist_err_edges": edges.tolist(),
        "hist_err_nf4": np.histogram(e4, edges)[0].tolist(),
        "hist_err_int4": np.histogram(ei, edges)[0].tolist()}
    out["ratio"] = out["mse_nf4"] / out["mse_int4"]
    out["gaussian_ratio_max"] = max(v["gaussian_ratio"] for v in per.values())
    out["table"] = {"columns": ["matrix", "shape", "excess kurtosis", "NF4 MSE", "int4 MSE",
                                "NF4 / int4", "NF4 / int4, Gaussian of the same size"],
                    "rows": [[n, "×".join(map(str, v["shape"])), f"{v['excess_kurtosis']:.2f}",
                              f"{v['mse_nf4']:.3e}", f"{v['mse_int4']:.3e}",
                              f"{v['mse_nf4'] / v['mse_int4']:.2f}",
                              f"{v['gaussian_ratio']:.2f}"] for n, v in per.items()]}
    # the code itself, ours beside the paper's appendix, and the int4 grid it replaces
    # (symmetric absmax int4: levels k/7 for k = -7..7, so 15 used of 16)
    out["codes_table"] = {
        "columns": ["index", "NF4 (ours)", "QLoRA appendix", "|difference|", "int4 level"],
        "rows": [[str(i), f"{a:+.7f}", f"{b:+.7f}", f"{abs(a - b):.1e}",
                  f"{(i - 7) / 7:+.4f}" if i < 15 else "(unused)"]
                 for i, (a, b) in enumerate(zip(out["codes"], out["published"]))]}
    return out


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (a1, a2) = new_figure(ncols=2, width=7.0, height=3.0)
    hw = np.asarray(results["hist_w"], dtype=float)
    centers = np.linspace(-1, 1, hw.size + 1)
    centers = (centers[1:] + centers[:-1]) / 2
    a1.bar(centers, hw / hw.sum(), width=centers[1] - centers[0], color=PALETTE[6], alpha=0.6,
           label="weights / block absmax")
    top = (hw / hw.sum()).max()
    for v in results["codes"]:
        a1.plot([v, v], [0, top], color=PALETTE[0], lw=0.9)
    for v in np.arange(-7, 8) / 7:
        a1.plot([v], [-0.04 * top], "|", color=PALETTE[1], ms=6)
    a1.plot([], [], color=PALETTE[0], label="NF4 codes")
    a1.plot([], [], "|", color=PALETTE[1], label="int4 levels")
    a1.set_xlabel("w / c (c: the block's absmax)")
    a1.set_ylabel("share of weights")
    a1.legend(fontsize=6, frameon=False, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    edges = np.asarray(results["hist_err_edges"])
    mid = (edges[1:] + edges[:-1]) / 2
    for h, color, name in ((results["hist_err_int4"], PALETTE[1], "int4"),
                           (results["hist_err_nf4"], PALETTE[0], "NF4")):
        a2.step(mid, h, where="mid", color=color, label=name)
    a2.set_yscale("log")
    a2.set_xlabel("reconstruction error ŵ − w")
    a2.set_ylabel("weights")
    a2.legend(fontsize=7, frameon=False)
    return {"finetune_nf4_error": fig}


def check(results: dict[str, Any]) -> None:
    assert results["max_code_diff"] < 1e-6
    # NF4 is built for normal weights: on a normal matrix of each shape it beats int4; on the
    # model's own weights it wins only as far as they are normal (the results say how far)
    assert results["gaussian_ratio_max"] < 1.0


EXPERIMENT = Experiment(
    name="finetune_nf4_error", stage=15, title="NF4 vs int4 reconstruction error on real weights",
    quick=replace(Config(), base=STANDIN), full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("NF4 MSE / int4 MSE", r["ratio"]),
                       ("matrices where NF4 wins", f"{r['nf4_better_in']} of {r['n_matrices']}")],
)
