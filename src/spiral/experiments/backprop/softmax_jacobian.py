"""The softmax Jacobian, and its collapse with cross-entropy to p − y (stage 3).

For p = softmax(z), ∂p_i/∂z_j = p_i(δ_ij − p_j), i.e. J = diag(p) − p pᵀ: symmetric, rows summing
to zero (rank C − 1, the null direction is the all-ones vector), and positive semi-definite
with vᵀJv = Var_{i∼p}(v_i) ≤ 1/2 for unit v (Popoviciu). Chained with cross-entropy,
∂L/∂p = −y/p, the C×C product Jᵀ(−y/p) collapses to p − y: O(C) work instead of O(C²).
The experiment draws the Jacobian as heatmaps at three logit scales (a saturated softmax has
a vanishing Jacobian), and checks every identity numerically.
Chapter: stage 3, "The softmax Jacobian".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.nn.kernels import softmax_backward, softmax_forward


@dataclass(frozen=True)
class Config:
    n_classes: int = 8
    scales: tuple[float, ...] = (0.5, 2.0, 8.0)
    n_trials: int = 200
    vocab_sizes: tuple[int, ...] = (65, 512, 4096, 50257)


def softmax_jacobian(z: np.ndarray) -> np.ndarray:
    """The full (C, C) Jacobian diag(p) − p pᵀ of softmax at logits z (C,)."""
    p = softmax_forward(z)
    return np.diag(p) - np.outer(p, p)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = config.n_classes
    base = rng.standard_normal(c)
    heatmaps = {f"{s:g}": softmax_jacobian(s * base).tolist() for s in config.scales}
    probs = {f"{s:g}": softmax_forward(s * base).tolist() for s in config.scales}
    worst = {"ce_collapse": 0.0, "symmetry": 0.0, "row_sum": 0.0, "jvp": 0.0}
    eig_min, eig_max = np.inf, -np.inf
    frob: dict[str, list[float]] = {f"{s:g}": [] for s in config.scales}
    for _ in range(config.n_trials):
        z = rng.standard_normal(c) * rng.choice(config.scales)
        y = np.zeros(c)
        y[rng.integers(c)] = 1.0
        p = softmax_forward(z)
        jac = softmax_jacobian(z)
        chain = jac.T @ (-y / p)  # the long way: full Jacobian times ∂L/∂p
        worst["ce_collapse"] = max(worst["ce_collapse"], float(np.abs(chain - (p - y)).max()))
        worst["symmetry"] = max(worst["symmetry"], float(np.abs(jac - jac.T).max()))
        worst["row_sum"] = max(worst["row_sum"], float(np.abs(jac.sum(axis=1)).max()))
        g = rng.standard_normal(c)
        worst["jvp"] = max(worst["jvp"], float(np.abs(jac.T @ g - softmax_backward(g, p)).max()))
        ev = np.linalg.eigvalsh(jac)
        eig_min, eig_max = min(eig_min, float(ev.min())), max(eig_max, float(ev.max()))
    for s in config.scales:
        for _ in range(20):
            jac = softmax_jacobian(s * rng.standard_normal(c))
            frob[f"{s:g}"].append(float(np.linalg.norm(jac)))
    mem_rows = [[v, f"{v * v * 4 / 2**20:,.1f}", f"{v * 4 / 2**10:,.2f}"]
                for v in config.vocab_sizes]
    return {
        "n_classes": c,
        "heatmaps": heatmaps,
        "probs": probs,
        "max_abs_error": worst,
        "eigenvalue_min": eig_min,
        "eigenvalue_max": eig_max,
        "scales": list(config.scales),
        "frobenius_by_scale": [float(np.median(v)) for v in frob.values()],  # median ‖J‖_F
        "memory_table": {
            "columns": ["vocab_size C", "full Jacobian per position (MiB, fp32)",
                        "fused p − y per position (KiB, fp32)"],
            "rows": mem_rows,
        },
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import new_figure

    maps = results["heatmaps"]
    fig, axes = new_figure(1, len(maps), width=2.6 * len(maps), height=2.9)
    lim = max(np.abs(np.asarray(m)).max() for m in maps.values())
    for ax, (scale, m) in zip(np.atleast_1d(axes), maps.items()):
        im = ax.imshow(np.asarray(m), cmap="RdBu_r", vmin=-lim, vmax=lim)
        pmax = max(results["probs"][scale])
        ax.set_title(f"logits × {scale}  (max p = {pmax:.2f})", fontsize=9)
        ax.set_xlabel("j (logit)")
        ax.set_ylabel("i (probability)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="∂p_i / ∂z_j")
    return {"softmax_jacobian": fig}


def check(results: dict[str, Any]) -> None:
    err = results["max_abs_error"]
    assert err["ce_collapse"] < 1e-12, err  # Jᵀ(−y/p) == p − y
    assert err["symmetry"] < 1e-15 and err["row_sum"] < 1e-14, err
    assert err["jvp"] < 1e-14, err  # the fused backward equals the full Jacobian product
    assert -1e-12 < results["eigenvalue_min"] < 1e-12  # PSD with a null direction (1, ..., 1)
    assert results["eigenvalue_max"] <= 0.5 + 1e-12  # Popoviciu: Var ≤ (range)²/4 ≤ 1/2
    f = results["frobenius_by_scale"]
    assert f[-1] < 0.5 * max(f), f  # a saturated softmax passes less gradient


EXPERIMENT = Experiment(
    name="backprop_softmax_jacobian", stage=3, title="The softmax Jacobian",
    quick=Config(n_trials=50), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("max |Jᵀ(−y/p) − (p − y)|", f"{r['max_abs_error']['ce_collapse']:.1e}"),
                       ("largest eigenvalue", f"{r['eigenvalue_max']:.3f}")],
    description="softmax Jacobian heatmaps and the cross-entropy collapse to p − y",
)
