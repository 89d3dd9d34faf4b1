"""Softmax entropy and gradient size with and without 1/√d, as the dimension d grows.

Logits q·k of sd √d make the softmax over T keys nearly one-hot once √d is a few units:
its entropy falls from about log T towards 0, and its Jacobian diag(p) − p pᵀ, whose
entries are p_i(δ_ij − p_j), vanishes with it. We draw unit-variance queries and keys and
measure, per d: mean row entropy, mean largest weight, share of saturated rows (largest
weight > 0.99), and the gradient that reaches the logits, ‖∂L/∂S‖ = ‖J_softmaxᵀ ∂L/∂P‖,
for an upstream ∂L/∂P of unit-variance entries (the same at every d, so only the
softmax changes): its median over rows and the share of rows where it is below 10⁻³
(rows that no longer learn). The fused attention op (random values and upstream gradient)
gives ‖∂L/∂Q‖ too, which the unscaled logits inflate by √d where they do not kill it.
Chapter: stage 7 ("What the scale protects: the softmax").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment
from spiral.nn import functional as F
from spiral.nn import kernels as K
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    dims: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    n_keys: int = 64          # T: keys per query (entropy is at most log T)
    n_rows: int = 64          # independent (query set, key set) draws per d
    dtype: str = "float64"


def _stats(rng: np.random.Generator, d: int, scaled: bool, config: Config) -> dict[str, float]:
    T, B = config.n_keys, config.n_rows
    dt = np.dtype(config.dtype)
    q = Tensor(rng.standard_normal((B, T, d)).astype(dt), requires_grad=True)
    k = Tensor(rng.standard_normal((B, T, d)).astype(dt))
    v = Tensor(rng.standard_normal((B, T, d)).astype(dt))
    scale = 1.0 / math.sqrt(d) if scaled else 1.0
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    out.backward(rng.standard_normal(out.shape).astype(dt))
    s = q.data @ np.swapaxes(k.data, -1, -2) * scale  # (B, T, d) @ (B, d, T) -> (B, T, T)
    p = K.softmax_forward(s, -1)
    dp = rng.standard_normal(p.shape).astype(dt)  # ∂L/∂P, unit variance at every d
    ds = K.softmax_backward(dp, p, -1)            # ∂L/∂S through the softmax Jacobian
    gnorm = np.sqrt((ds**2).sum(-1))              # (B, T): one norm per query row
    ent = -(p * np.log(np.maximum(p, 1e-300))).sum(-1)
    return {"entropy": float(ent.mean()), "max_weight": float(p.max(-1).mean()),
            "saturated": float((p.max(-1) > 0.99).mean()),
            "grad_logits": float(np.median(gnorm)),
            "dead_rows": float((gnorm < 1e-3).mean()),
            "grad_query": float(np.median(np.sqrt((q.grad**2).sum(-1)))),
            "logit_sd": float(s.std())}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # a waiting 2nd BLAS thread is slower
        return _run(config, rng)


def _run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    res: dict[str, list[dict[str, float]]] = {"scaled": [], "unscaled": []}
    rows = []
    for d in config.dims:
        a, b = _stats(rng, d, True, config), _stats(rng, d, False, config)
        res["scaled"].append(a)
        res["unscaled"].append(b)
        rows.append([d, f"{a['entropy']:.2f}", f"{b['entropy']:.2f}",
                     f"{100 * b['saturated']:.0f} %", f"{a['grad_logits']:.3f}",
                     f"{b['grad_logits']:.3f}", f"{100 * b['dead_rows']:.0f} %"])
    last = {k: v[-1] for k, v in res.items()}
    g_u = [r["grad_logits"] for r in res["unscaled"]]
    peak = int(np.argmax(g_u))
    return {"dims": list(config.dims), "n_keys": config.n_keys,
            "max_entropy": math.log(config.n_keys), **res,
            "at_max_d": {"d": config.dims[-1], **{f"{k}_{m}": last[k][m]
                                                  for k in last for m in last[k]}},
            "unscaled_grad_peak_d": config.dims[peak],
            "unscaled_grad_peak_over_last": g_u[peak] / g_u[-1],
            "grad_ratio_at_max_d": last["unscaled"]["grad_logits"] / last["scaled"]["grad_logits"],
            "table": {"columns": ["d", "entropy, scaled (nats)", "entropy, unscaled (nats)",
                                  "saturated rows, unscaled", "median ‖∂L/∂S‖, scaled",
                                  "median ‖∂L/∂S‖, unscaled",
                                  "rows with ‖∂L/∂S‖ < 10⁻³, unscaled"], "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 2, width=7.2, height=3.2)
    d = results["dims"]
    for ax, key, label in ((axes[0], "entropy", "row entropy (nats)"),
                           (axes[1], "grad_logits", "median ‖∂L/∂S‖ per query row")):
        for name, color in (("scaled", PALETTE[0]), ("unscaled", PALETTE[1])):
            y = [r[key] for r in results[name]]
            ax.plot(d, y, marker="o", ms=3, color=color)
            direct_label(ax, d, y, "÷√d" if name == "scaled" else "no scale", color=color)
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(d) * 0.8, max(d) * 6)
        ax.set_xlabel("dimension d")
        ax.set_ylabel(label)
    axes[0].axhline(results["max_entropy"], color="#999999", lw=0.8, ls=":")
    axes[0].annotate(f"log {results['n_keys']} (uniform row)", (d[0], results["max_entropy"]),
                     xytext=(0, 3),
                     textcoords="offset points", fontsize=7, color="#777777")
    return {"softmax_saturation": fig}


def check(results: dict[str, Any]) -> None:
    s, u = results["scaled"], results["unscaled"]
    # with the scale, entropy and gradient barely move with d; without it, both collapse
    ent_s = [r["entropy"] for r in s]
    assert max(ent_s) - min(ent_s) < 0.25 * max(ent_s), ent_s
    assert u[-1]["entropy"] < 0.3 * s[-1]["entropy"]
    assert u[-1]["grad_logits"] < 0.5 * s[-1]["grad_logits"]
    assert u[-1]["dead_rows"] > 0.2 and s[-1]["dead_rows"] == 0.0
    assert u[-1]["saturated"] > 0.3 and s[-1]["saturated"] < 0.05
    assert u[0]["entropy"] > u[-1]["entropy"]  # it is the growth of d that does it


EXPERIMENT = Experiment(
    name="attention_softmax_saturation", stage=7, title="Softmax saturation without √d",
    quick=Config(dims=(1, 16, 256), n_rows=16),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("entropy scaled / unscaled at max d",
                        f"{r['at_max_d']['scaled_entropy']:.2f} / "
                        f"{r['at_max_d']['unscaled_entropy']:.2f}"),
                       ("grad ratio unscaled/scaled", r["grad_ratio_at_max_d"])],
)
