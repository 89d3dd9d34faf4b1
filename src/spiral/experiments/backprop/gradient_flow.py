"""Gradient magnitude per layer through deep plain and residual networks (stage 3).

Backpropagation multiplies the upstream gradient by one local Jacobian per layer,
∂L/∂h_l = J_{l+1}ᵀ ⋯ J_Lᵀ ∂L/∂h_L, so its norm behaves like a product of per-layer gains: it
vanishes when the gains sit below one (sigmoid: φ' ≤ 1/4) and explodes above one. A
residual layer h + f(h) has Jacobian I + J_f: the identity carries the signal, but I + J_f is
not norm-preserving — its smallest singular value can fall below one, so some directions
still shrink. This experiment measures both: the gradient norm at every depth for
sigmoid, tanh and ReLU nets with and without residual connections, and the singular values
of the residual Jacobians. Chapter: stage 3, "Residual connections: a gradient highway".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd

ACTIVATIONS = ("sigmoid", "tanh", "relu")


@dataclass(frozen=True)
class Config:
    depth: int = 50
    width: int = 64
    batch: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)


def _act(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activation value and its derivative (the local gradient)."""
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s, s * (1.0 - s)
    if name == "tanh":
        t = np.tanh(z)
        return t, 1.0 - t * t
    return np.maximum(z, 0.0), (z > 0).astype(z.dtype)


ARCHS = ("plain", "residual", "scaled")  # scaled: h + f(h)/√depth (GPT-2-style branch scale)


def layer_gradient_norms(
    act: str, arch: str, depth: int, width: int, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-example ‖∂L/∂h_l‖ for l = 0..depth, and min singular values of each block.

    Weights are N(0, 1/width) (LeCun); L = Σ r ⊙ h_L with a fixed random r, so the top
    gradient has the same size for every network.
    """
    residual = arch != "plain"
    alpha = 1.0 / np.sqrt(depth) if arch == "scaled" else 1.0
    ws = [rng.standard_normal((width, width)) / np.sqrt(width) for _ in range(depth)]
    h = rng.standard_normal((batch, width))
    derivs = []
    for w in ws:  # forward, keeping φ'(z) for the backward pass
        a, d = _act(act, h @ w.T)
        derivs.append(d)
        h = h + alpha * a if residual else a
    g = np.broadcast_to(rng.standard_normal(width), (batch, width)).copy()  # ∂L/∂h_L
    norms = [np.linalg.norm(g, axis=1).mean()]
    min_sv = []
    for w, d in zip(reversed(ws), reversed(derivs)):
        local = (g * d) @ w  # (B, width): Jᵀ g with J = diag(φ') W — local x upstream
        local *= alpha
        g = g + local if residual else local
        norms.append(np.linalg.norm(g, axis=1).mean())
        if residual:  # singular values of I + diag(φ'(z)) W for the first example
            jac = np.eye(width) + alpha * d[0][:, None] * w
            min_sv.append(np.linalg.svd(jac, compute_uv=False).min())
    return np.array(norms[::-1]), np.array(min_sv)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    curves: dict[str, list[list[float]]] = {}
    ratio: dict[str, list[float]] = {}
    min_sv: dict[str, list[float]] = {}
    for seed in config.seeds:
        for act in ACTIVATIONS:
            for arch in ARCHS:
                key = f"{arch}_{act}"
                r = np.random.default_rng([seed, ACTIVATIONS.index(act)])
                norms, sv = layer_gradient_norms(
                    act, arch, config.depth, config.width, config.batch, r
                )
                curves.setdefault(key, []).append(norms.tolist())
                ratio.setdefault(key, []).append(float(np.log10(norms[0] / norms[-1])))
                if arch != "plain":
                    min_sv.setdefault(key, []).append(float(sv.min()))
    rows = []
    for act in ACTIVATIONS:
        row = [act]
        for arch in ARCHS:
            v = ratio[f"{arch}_{act}"]
            row.append(f"{np.mean(v):+.1f} ± {np.std(v, ddof=1):.1f}")
        row += [f"{np.min(min_sv[f'{arch}_{act}']):.2f}" for arch in ARCHS[1:]]
        rows.append(row)
    return {
        "depth": config.depth,
        # ReLU, LeCun init: E‖δ_{l−1}‖² = n · (1/n) · P(z > 0) · E‖δ_l‖² = ½ E‖δ_l‖² per layer
        "predicted_log10_ratio_plain_relu": -config.depth * np.log10(2.0) / 2,
        "log10_ratio": {k: mean_sd(v) for k, v in ratio.items()},
        "residual_min_singular_value": {k: float(np.min(v)) for k, v in min_sv.items()},
        "curves": {k: np.mean(v, axis=0).tolist() for k, v in curves.items()},
        "table": {
            "columns": ["activation", "plain", "residual", "residual, branch/√L",
                        "min σ(I + J)", "min σ(I + J/√L)"],
            "rows": rows,
        },
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    fig, axes = new_figure(1, 3, width=9.0, height=3.4, sharey=True)
    names = {"plain": "plain", "residual": "residual h + f(h)", "scaled": "residual h + f(h)/√L"}
    for ax, arch in zip(axes, ARCHS):
        for i, act in enumerate(ACTIVATIONS):
            y = results["curves"][f"{arch}_{act}"]
            x = list(range(len(y)))
            ax.semilogy(x, y, color=PALETTE[i])
            direct_label(ax, x, y, act, color=PALETTE[i], dy=9 * (i - 1))  # labels apart
        ax.set_title(f"{names[arch]}, depth {results['depth']}")
        ax.set_xlabel("layer l (0 = input)")
    axes[0].set_ylabel("mean ‖∂L/∂h_l‖ per example")
    return {"gradient_flow": fig}


def check(results: dict[str, Any]) -> None:
    lr = results["log10_ratio"]
    # sigmoid: every layer multiplies by at most 1/4 x ‖W‖ -> vanishing by orders of magnitude
    assert lr["plain_sigmoid"]["mean"] < -5, lr["plain_sigmoid"]
    # ReLU with LeCun (not He) init halves the squared norm per layer
    assert lr["plain_relu"]["mean"] < -2, lr["plain_relu"]
    # ... and the two-line prediction −(L/2)·log₁₀2 holds to within a few tenths of a decade
    assert abs(lr["plain_relu"]["mean"] - results["predicted_log10_ratio_plain_relu"]) < 1.0
    for act in ACTIVATIONS:  # the identity path keeps the signal at the input
        for arch in ("residual", "scaled"):
            assert lr[f"{arch}_{act}"]["mean"] > -0.5, (arch, act, lr[f"{arch}_{act}"])
            assert lr[f"{arch}_{act}"]["mean"] > lr[f"plain_{act}"]["mean"] + 0.5
        # scaling the branch by 1/√L keeps the input gradient within 10x of the output's
        assert abs(lr[f"scaled_{act}"]["mean"]) < 1, (act, lr[f"scaled_{act}"])
    # unscaled ReLU branches add variance at every layer: the highway itself explodes
    assert lr["residual_relu"]["mean"] > 1, lr["residual_relu"]
    # ... but I + J is no isometry: some direction shrinks in some block
    assert min(results["residual_min_singular_value"].values()) < 1.0


EXPERIMENT = Experiment(
    name="backprop_gradient_flow", stage=3, title="Gradient magnitude through depth",
    quick=Config(depth=20, width=32, batch=16), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"{v['mean']:+.1f}") for k, v in r["log10_ratio"].items()],
    description="log10 of input-layer over output-layer gradient norm, plain vs residual",
)
