"""A 2-D slice of the real MLP language model's loss landscape, with Adam's path.

A loss surface in d dimensions can only be looked at through a plane. Following Li, Xu,
Taylor, Studer & Goldstein, *Visualizing the Loss Landscape of Neural Nets* (2018), we
train the stage-4 ``MLPLanguageModel`` on names with Adam (the shared loop), keep
snapshots θ₀, …, θ_T of the path, and evaluate the validation loss (the shared evaluator, on
a fixed prefix) on a grid of

    θ(a, b) = θ* + a δ₁ + b δ₂,     θ* = θ_T,

for two planes: (1) *filter-normalised random directions* — δ drawn from N(0, 1) and each
row of each weight matrix (a filter: one output unit, or one embedding row) rescaled to
the norm of the same row of θ*, biases left out (δ = 0) — and (2) the top two principal
directions of the path {θₜ − θ*}. The path is projected onto each plane by least squares,
and we record how much of the path's squared length each plane captures: in a space of
thousands of dimensions a random plane sees almost none of the path, which is why Li et al.
plot trajectories in the PCA plane.
Chapter: stage 5, "Looking at a real loss landscape".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment


@dataclass(frozen=True)
class Config:
    steps: int = 1500
    snapshot_every: int = 50
    lr: float = 3e-3
    d_hidden: int = 128
    batch_size: int = 32
    seq_len: int = 32
    grid: int = 25
    span: float = 1.0             # random plane: a, b ∈ [−span, span] (filter-normalised units)
    eval_tokens: int = 4000
    seed: int = 0
    null_walks: int = 20          # random walks with the path's step lengths (a null model)


def _data() -> dict[str, Any]:
    from spiral.experiments.optimization.compare_lm import _names_ids

    return _names_ids()


def _flat(model: Any) -> np.ndarray:
    return np.concatenate([p.data.astype(np.float64).ravel() for p in model.parameters()])


def _set_flat(model: Any, flat: np.ndarray) -> None:
    i = 0
    for p in model.parameters():
        n = p.data.size
        p.data[...] = flat[i:i + n].reshape(p.data.shape)
        i += n


def filter_normalized_direction(model: Any, rng: np.random.Generator) -> np.ndarray:
    """A random direction, each row of each ≥2-D parameter scaled to that row's norm in θ;
    1-D parameters (biases) get zero (Li et al. 2018, §4)."""
    parts = []
    for p in model.parameters():
        w = p.data.astype(np.float64)
        if w.ndim < 2:
            parts.append(np.zeros(w.size))
            continue
        d = rng.standard_normal(w.shape)
        rows_w = w.reshape(w.shape[0], -1)              # (filters, fan_in)
        rows_d = d.reshape(w.shape[0], -1)
        rows_d *= (np.linalg.norm(rows_w, axis=1, keepdims=True)
                   / (np.linalg.norm(rows_d, axis=1, keepdims=True) + 1e-12))
        parts.append(rows_d.ravel())
    return np.concatenate(parts)


def _surface(model: Any, center: np.ndarray, d1: np.ndarray, d2: np.ndarray,
             a: np.ndarray, b: np.ndarray, val: np.ndarray) -> np.ndarray:
    from spiral.evaluate import evaluate

    z = np.empty((len(b), len(a)))
    for i, bi in enumerate(b):
        for j, aj in enumerate(a):
            _set_flat(model, center + aj * d1 + bi * d2)
            z[i, j] = evaluate(model, val).nats
    _set_flat(model, center)
    return z


def _project(path: np.ndarray, d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares coordinates of each path point in span(d1, d2); fraction of ‖path‖²."""
    basis = np.stack([d1, d2], axis=1)                  # (n_params, 2)
    coef, *_ = np.linalg.lstsq(basis, path.T, rcond=None)   # (2, n_snapshots)
    captured = float(np.sum((basis @ coef) ** 2) / max(np.sum(path**2), 1e-300))
    return coef.T, captured


def _explained(path: np.ndarray, centre: bool) -> list[float]:
    """Shares of the path's squared length along its first two principal directions; the
    uncentred SVD (of θₜ − θ*) is dominated by the overall displacement θ₀ − θ*."""
    x = path - path.mean(axis=0) if centre else path
    sing = np.linalg.svd(x, compute_uv=False)
    return (np.cumsum(sing[:2] ** 2) / np.sum(sing**2)).tolist()


def null_walks(path: np.ndarray, n_walks: int, rng: np.random.Generator) -> dict[str, Any]:
    """The same analysis on random walks with the path's own step lengths between snapshots
    (isotropic directions in the same dimension): how much a PCA plane captures by chance."""
    lengths = np.linalg.norm(np.diff(path, axis=0), axis=1)  # (n_snapshots - 1,)
    out: dict[str, list[list[float]]] = {"uncentred": [], "centred": []}
    for _ in range(n_walks):
        steps = rng.standard_normal((len(lengths), path.shape[1]))
        steps *= (lengths / np.linalg.norm(steps, axis=1))[:, None]
        walk = np.vstack([np.zeros(path.shape[1]), np.cumsum(steps, axis=0)])
        walk = walk - walk[-1]  # relative to the end point, like θₜ − θ*
        for k in out:
            out[k].append(_explained(walk, centre=k == "centred"))
    return {k: {"pc1": float(np.mean([v[0] for v in vals])),
                "pc12": float(np.mean([v[1] for v in vals])),
                "pc1_sd": float(np.std([v[0] for v in vals], ddof=1)),
                "pc12_sd": float(np.std([v[1] for v in vals], ddof=1))}
            for k, vals in out.items()}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import train as T
    from spiral.experiments.stability.common import single_thread
    from spiral.models.mlp import MLPConfig, MLPLanguageModel
    from spiral.optim import Adam

    d = _data()
    val = d["val"][: config.eval_tokens]
    model = MLPLanguageModel(MLPConfig(vocab_size=d["vocab_size"], n_context=3, d_embed=10,
                                       d_hidden=config.d_hidden, n_layers=1),
                             rng=np.random.default_rng(config.seed))
    opt = Adam(model.parameters(), lr=config.lr)
    tc = T.TrainConfig(max_steps=config.steps, batch_size=config.batch_size,
                       seq_len=config.seq_len, eval_interval=config.steps, grad_clip=0.0,
                       progress=False, seed=config.seed)
    batches = np.random.default_rng(config.seed + 100)
    snaps = [_flat(model)]
    state = None
    with single_thread():
        for until in range(config.snapshot_every, config.steps + 1, config.snapshot_every):
            state = T.train(model, opt, d["train"], val, tc, batches, state=state, until=until)
            snaps.append(_flat(model))
        center = snaps[-1]
        path = np.asarray(snaps) - center                   # (n_snapshots, n_params)
        d1 = filter_normalized_direction(model, rng)
        d2 = filter_normalized_direction(model, rng)
        a = np.linspace(-config.span, config.span, config.grid)
        z_rand = _surface(model, center, d1, d2, a, a, val)
        rand_xy, rand_captured = _project(path, d1, d2)
        # principal plane of the path
        _, sing, vt = np.linalg.svd(path, full_matrices=False)
        p1, p2 = vt[0], vt[1]
        pca_xy, pca_captured = _project(path, p1, p2)
        lo, hi = pca_xy.min(axis=0), pca_xy.max(axis=0)
        pad = 0.25 * (hi - lo)
        pa = np.linspace(lo[0] - pad[0], hi[0] + pad[0], config.grid)
        pb = np.linspace(lo[1] - pad[1], hi[1] + pad[1], config.grid)
        z_pca = _surface(model, center, p1, p2, pa, pb, val)
    from spiral.evaluate import evaluate

    centre_loss = float(evaluate(model, val).nats)
    n_params = int(center.size)
    return {
        "n_params": n_params, "centre_loss": centre_loss,
        "random": {"a": a.tolist(), "b": a.tolist(), "z": z_rand.tolist(),
                   "path": rand_xy.tolist(), "captured": rand_captured,
                   "grid_min": float(z_rand.min()), "edge_mean": float(np.mean(
                       np.concatenate([z_rand[0], z_rand[-1], z_rand[:, 0], z_rand[:, -1]])))},
        "pca": {"a": pa.tolist(), "b": pb.tolist(), "z": z_pca.tolist(), "path": pca_xy.tolist(),
                "captured": pca_captured,
                "explained": (sing[:2] ** 2 / np.sum(sing**2)).tolist()},
        "random_captured_pct": 100 * rand_captured, "pca_captured_pct": 100 * pca_captured,
        "path_explained": {"uncentred": _explained(path, False),
                           "centred": _explained(path, True)},
        "null_walk": null_walks(path, config.null_walks, np.random.default_rng(config.seed + 7)),
        "null_walk_count": config.null_walks,
        "start_loss": float(state.history[0]["val_loss"]) if state and state.history else None,
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    fig, axes = new_figure(1, 2, width=10.0, height=4.2)
    for ax, key, title in [(axes[0], "random", "filter-normalised random plane"),
                           (axes[1], "pca", "PCA plane of Adam's path")]:
        r = results[key]
        a, b, z = np.asarray(r["a"]), np.asarray(r["b"]), np.asarray(r["z"])
        cs = ax.contour(a, b, z, levels=14, cmap="viridis", linewidths=0.8)
        ax.clabel(cs, fontsize=6, fmt="%.2f")
        path = np.asarray(r["path"])
        ax.plot(path[:, 0], path[:, 1], "-o", color=PALETTE[1], ms=2, lw=1.0)
        ax.plot(0, 0, "k*", ms=7)
        ax.set_title(f"{title} ({100 * r['captured']:.1f}% of path)")
        ax.set_xlabel("α (direction 1)")
    axes[0].set_ylabel("β (direction 2)")
    return {"landscape": fig}


def check(results: dict[str, Any]) -> None:
    r = results["random"]
    z = np.asarray(r["z"])
    mid = len(z) // 2
    # the trained point sits in a basin of the random plane: its loss is within 0.02 nats of
    # the grid's lowest, and the plane's rim is clearly higher
    assert z[mid, mid] <= z.min() + 0.02, (z[mid, mid], z.min())
    assert r["edge_mean"] > z[mid, mid] + 0.1
    # a random plane captures almost none of the path; the PCA plane most of it
    assert results["random_captured_pct"] < 5.0
    assert results["pca_captured_pct"] > 50.0
    # ... but a random walk with the same step lengths is also captured mostly by its own PCA
    # plane: a high share alone does not show low-dimensional optimization
    assert results["null_walk"]["uncentred"]["pc12"] > 0.5, results["null_walk"]
    # Adam's own path is more concentrated than the null (the part of the picture about Adam)
    assert results["path_explained"]["uncentred"][1] > results["null_walk"]["uncentred"]["pc12"]


EXPERIMENT = Experiment(
    name="optim_loss_landscape", stage=5, title="A 2-D slice of the MLP's loss landscape",
    quick=Config(steps=300, snapshot_every=50, grid=9, d_hidden=64, eval_tokens=1500),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("path captured by random plane", f"{r['random_captured_pct']:.2f}%"),
                       ("by PCA plane", f"{r['pca_captured_pct']:.1f}%")],
    description="loss on filter-normalised random and PCA planes through the trained MLP",
)
