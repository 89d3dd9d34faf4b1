"""Gradient clipping on an exploding network (stage 3).

A deep ReLU net initialised with a gain above He's (std = gain·√(2/fan_in), gain > 1)
multiplies the backward signal by roughly ``gain`` per layer, so the first SGD steps are
huge and training diverges. Clipping by the global norm,

    g ← g · min(1, max_norm / ‖g‖₂),     ‖g‖₂ over *all* parameters together,

keeps the direction of the gradient and bounds the step length at lr·max_norm. This
experiment trains the same exploding net with and without clipping (hand-written backward
passes, SGD) and records the loss curves and how often each run diverges.
Chapter: stage 3, "Exploding gradients and clipping".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd


@dataclass(frozen=True)
class Config:
    depth: int = 10
    width: int = 32
    n_in: int = 8
    n_examples: int = 256
    gain: float = 1.6
    lr: float = 0.02
    steps: int = 400
    max_norms: tuple[float, ...] = (0.0, 10.0, 1.0, 0.1)  # 0.0 = no clipping
    seeds: tuple[int, ...] = (0, 1, 2)


def clip_grad_norm_(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale ``grads`` in place so their joint L2 norm is at most ``max_norm``; return the norm."""
    total = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    if np.isfinite(total) and total > max_norm:
        for g in grads:
            g *= max_norm / (total + 1e-6)
    return total


def _task(config: Config, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((config.n_examples, config.n_in))
    teacher = rng.standard_normal((config.n_in, 1)) / np.sqrt(config.n_in)
    return x, np.tanh(x @ teacher)  # a smooth target with loss ~0.3 for a zero predictor


def train(config: Config, max_norm: float, rng: np.random.Generator) -> tuple[list[float], float]:
    """Full-batch SGD on MSE; returns the loss curve and the largest pre-clip gradient norm."""
    x, y = _task(config, rng)
    sizes = [config.n_in] + [config.width] * (config.depth - 1) + [1]
    ws = [rng.standard_normal((a, b)) * config.gain * np.sqrt(2.0 / a)
          for a, b in zip(sizes[:-1], sizes[1:])]
    losses, peak = [], 0.0
    for _ in range(config.steps):
        hs = [x]
        for i, w in enumerate(ws):  # forward: ReLU on all but the output layer
            z = hs[-1] @ w
            hs.append(np.maximum(z, 0.0) if i < len(ws) - 1 else z)
        err = hs[-1] - y
        loss = float(np.mean(err * err))
        losses.append(loss)
        if not np.isfinite(loss) or loss > 1e12:
            break
        g = 2.0 * err / len(x)  # ∂L/∂out, (N, 1)
        grads = [np.empty(0)] * len(ws)
        for i in range(len(ws) - 1, -1, -1):  # backward: local x upstream, layer by layer
            grads[i] = hs[i].T @ g  # ∂L/∂W_i = h_iᵀ g  (the transpose pattern)
            g = (g @ ws[i].T) * (hs[i] > 0) if i > 0 else g
        norm = clip_grad_norm_(grads, max_norm) if max_norm > 0 else float(
            np.sqrt(sum(float(np.vdot(gr, gr)) for gr in grads)))
        peak = max(peak, norm)
        for w, gr in zip(ws, grads):
            w -= config.lr * gr
    return losses, peak


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"curves": {}, "final_loss": {}, "diverged": {}, "peak_norm": {}}
    rows = []
    for max_norm in config.max_norms:
        key = "none" if max_norm == 0 else "clip_" + f"{max_norm:g}".replace(".", "p")
        finals, diverged, peaks, curves = [], 0, [], []
        for seed in config.seeds:
            losses, peak = train(config, max_norm, np.random.default_rng(seed))
            ok = len(losses) == config.steps and np.isfinite(losses[-1])
            diverged += not ok
            finals.append(losses[-1] if ok else float("inf"))
            peaks.append(peak)
            curves.append(losses)
        out["curves"][key] = curves[0]
        out["diverged"][key] = diverged
        out["peak_norm"][key] = float(np.max(peaks))
        out["final_loss"][key] = mean_sd(finals) if diverged == 0 else {"mean": float("inf")}
        final_txt = (f"{np.mean(finals):.4f} ± {np.std(finals, ddof=1):.4f}" if diverged == 0
                     else "diverged")
        label = "none" if max_norm == 0 else f"{max_norm:g}"
        rows.append([label, f"{diverged}/{len(config.seeds)}", final_txt, f"{np.max(peaks):.3g}"])
    out["initial_loss"] = float(out["curves"]["none"][0])
    out["table"] = {"columns": ["max_norm", "runs diverged", "final MSE (mean ± sd)",
                                "largest gradient norm seen"], "rows": rows}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    fig, ax = new_figure(width=6.4, height=3.6)
    n_steps = max(len(c) for c in results["curves"].values())
    for i, (key, curve) in enumerate(results["curves"].items()):
        y = np.minimum(np.asarray(curve, dtype=float), 1e12)  # inf -> top of the axis
        x = np.arange(len(y))
        label = "no clipping" if key == "none" else "clip at " + key[5:].replace("p", ".")
        ax.semilogy(x, y, color=PALETTE[i], marker="o" if len(y) < 5 else None)
        label += " (diverged)" if len(y) < n_steps else ""
        direct_label(ax, x.tolist(), y.tolist(), label, color=PALETTE[i], dy=6 * (i - 2))
    ax.set_xlabel("SGD step")
    ax.set_ylabel("training MSE (log scale)")
    ax.set_title("An exploding ReLU net, seed 0")
    return {"clipping": fig}


def check(results: dict[str, Any]) -> None:
    div = results["diverged"]
    assert div["none"] > 0, "the unclipped net was supposed to explode"
    for key in results["diverged"]:
        if key != "none":
            assert div[key] == 0, div  # every clipped run survives
            # ... and learns: final loss well under the starting loss
            assert results["final_loss"][key]["mean"] < 0.1 * results["initial_loss"], key
    assert results["peak_norm"]["none"] > 1e3  # the gradients really did explode
    # the price: a tight clip slows learning compared with a loose one
    assert results["final_loss"]["clip_10"]["mean"] < results["final_loss"]["clip_0p1"]["mean"]


EXPERIMENT = Experiment(
    name="backprop_gradient_clipping", stage=3, title="Gradient clipping on an exploding net",
    quick=Config(), full=Config(seeds=(0, 1, 2, 3, 4)),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"diverged {v}") for k, v in r["diverged"].items()],
    description="final MSE and divergence with and without global-norm clipping",
)
