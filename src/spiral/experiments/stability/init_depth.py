"""Activations and gradients through 50 layers under five initializations (stage 6).

For h_l = φ(W_l h_{l−1}) the forward second moment changes per layer by
fan_in · Var(W) · E[φ(z)²]/Var(z) and the backward one by fan_out · Var(W) · E[φ'(z)²], so a
scale that is a little off compounds geometrically over depth. We push one batch through a
50-layer plain MLP (no residuals, no normalization) with

    too small   N(0, 0.01²)                      the classic "small random numbers"
    too large   N(0, 1)                          std 1 regardless of width
    Xavier      N(0, 2/(fan_in + fan_out))       Glorot & Bengio (2010); = LeCun 1/fan_in here
    Xavier·5/3  the same with torch's tanh gain  calculate_gain("tanh")
    Kaiming     N(0, 2/fan_in)                   He et al. (2015), for ReLU

and tanh or ReLU, and record per layer the mean and std of the activations and the norm of
∂L/∂W_l for a fixed random readout L = Σ r ⊙ h_L / √(B · width). Weights come from
``spiral.nn.init``; the forward and backward passes are the ``Tensor`` engine's.
Each row is compared with the mean-field prediction of ``mean_field.predict`` (Poole et al.
2016), computed without drawing a weight. Chapter: stage 6 (training stability), "Watching a
deep network at initialization" and "What the numbers obey".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.stability.common import single_thread, spread_labels
from spiral.experiments.stability.mean_field import fixed_point, predict, sigma_w2
from spiral.nn import functional as F
from spiral.nn import init

SCHEMES = ("small", "large", "xavier", "xavier_tanh_gain", "kaiming")
LABELS = {"small": "N(0, 0.01²)", "large": "N(0, 1)", "xavier": "Xavier",
          "xavier_tanh_gain": "Xavier × 5/3", "kaiming": "Kaiming (2/fan_in)"}
ACTIVATIONS = ("tanh", "relu")


@dataclass(frozen=True)
class Config:
    depth: int = 50
    width: int = 256
    batch: int = 256
    seeds: tuple[int, ...] = (0, 1, 2)


def init_weight(scheme: str, width: int, rng: np.random.Generator) -> np.ndarray:
    """One (width, width) weight matrix drawn with ``scheme`` via spiral.nn.init."""
    w = np.zeros((width, width))
    if scheme == "small":
        return init.normal_(w, 0.0, 0.01, generator=rng)
    if scheme == "large":
        return init.normal_(w, 0.0, 1.0, generator=rng)
    if scheme == "xavier":
        return init.xavier_normal_(w, generator=rng)
    if scheme == "xavier_tanh_gain":
        return init.xavier_normal_(w, gain=init.calculate_gain("tanh"), generator=rng)
    if scheme == "kaiming":
        return init.kaiming_normal_(w, nonlinearity="relu", generator=rng)
    raise ValueError(scheme)


def probe(scheme: str, act: str, config: Config, rng: np.random.Generator) -> dict[str, Any]:
    """Per-layer activation mean/std/saturation and weight-gradient norm for one network."""
    ws = [Tensor(init_weight(scheme, config.width, rng), requires_grad=True)
          for _ in range(config.depth)]
    h = Tensor(rng.standard_normal((config.batch, config.width)))  # unit variance
    hs = []
    for w in ws:
        z = F.linear(h, w)  # (B, width)
        h = z.tanh() if act == "tanh" else z.relu()
        hs.append(h.data)
    r = rng.standard_normal(h.shape) / math.sqrt(h.data.size)
    (h * Tensor(r)).sum().backward()
    return {
        "mean": [float(a.mean()) for a in hs],
        "std": [float(a.std()) for a in hs],
        "saturated": [float(np.mean(np.abs(a) > 0.99)) for a in hs],
        "dead": [float(np.mean(a == 0)) for a in hs],
        "grad": [float(np.linalg.norm(w.grad)) for w in ws],
    }


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    with single_thread(), np.errstate(over="ignore", invalid="ignore", under="ignore"):
        return _run(config)


def _run(config: Config) -> dict[str, Any]:
    curves: dict[str, dict[str, list[float]]] = {}
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    for act in ACTIVATIONS:
        for scheme in SCHEMES:
            key = f"{act}_{scheme}"
            runs = [probe(scheme, act, config, np.random.default_rng([s, len(curves)]))
                    for s in config.seeds]
            curves[key] = {k: np.mean([r[k] for r in runs], axis=0).tolist() for k in runs[0]}
            last_std = [r["std"][-1] for r in runs]
            log_grad = [math.log10(max(r["grad"][0], 1e-300) / max(r["grad"][-1], 1e-300))
                        for r in runs]
            mf = predict(act, sigma_w2(scheme, config.width), config.depth)
            curves[key]["mean_field_std"] = mf["std"]
            summary[key] = {"std_first": mean_sd([r["std"][0] for r in runs]),
                            "predicted": {k: mf[k] for k in
                                          ("std_last", "saturated_last", "log10_grad_ratio")}
                            | {"chi_last": mf["chi"][-1]},
                            "std_last": mean_sd(last_std),
                            "log10_grad_ratio": mean_sd(log_grad),
                            "saturated_last": mean_sd([r["saturated"][-1] for r in runs])}
            sat = f"{100 * np.mean([r['saturated'][-1] for r in runs]):.0f} %"
            rows.append([act, LABELS[scheme], f"{np.mean([r['std'][0] for r in runs]):.3g}",
                         f"{np.mean(last_std):.3g} ({mf['std_last']:.3g})",
                         sat if act == "tanh" else "–",
                         f"{np.mean(log_grad):+.2f} ({mf['log10_grad_ratio']:+.2f})"])
    q_star = fixed_point((5 / 3) ** 2)
    star = predict("tanh", (5 / 3) ** 2, 1, q_input=q_star / (5 / 3) ** 2)
    return {
        "depth": config.depth, "width": config.width, "curves": curves, "summary": summary,
        "tanh_gain_fixed_point": {"q": q_star, "std": star["std_last"], "chi": star["chi"][0]},
        "table": {"columns": ["activation", "init", "std layer 1",
                              f"std layer {config.depth} (mean-field)",
                              "tanh units saturated (abs h > 0.99) at the top",
                              "log₁₀ ‖∂L/∂W₁‖ / ‖∂L/∂W_L‖ (mean-field)"],
                  "rows": rows},
    }


def _plot_metric(results: dict[str, Any], metric: str, ylabel: str, log_tanh: bool) -> Any:
    from spiral.plotting import PALETTE, new_figure

    fig, axes = new_figure(1, 2, width=9.6, height=3.8)
    for ax, act in zip(axes, ACTIVATIONS):
        log = act == "relu" or log_tanh
        ends = []
        for i, scheme in enumerate(SCHEMES):
            y = np.asarray(results["curves"][f"{act}_{scheme}"][metric], dtype=float)
            if log:  # log axis: values below 1e-30 (down to exact 0) are drawn at the floor
                y = np.maximum(y, 1e-30)
            x = list(range(1, len(y) + 1))
            (ax.semilogy if log else ax.plot)(x, y, color=PALETTE[i])
            mf = results["curves"][f"{act}_{scheme}"].get("mean_field_std")
            if metric == "std" and mf is not None:  # the prediction, thin and dotted
                m = np.maximum(np.asarray(mf, dtype=float), 1e-30) if log else mf
                ax.plot(x, m, color="black", lw=0.7, ls=":")
            ends.append((float(x[-1]), float(y[-1]), LABELS[scheme], PALETTE[i]))
        spread_labels(ax, ends)
        ax.set_title(f"{act}, {results['width']} wide, {results['depth']} layers")
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel + (" (floor 1e-30)" if log else ""))
    return fig


def plot(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "activation_std": _plot_metric(results, "std", "std of activations", log_tanh=False),
        "gradient_norm": _plot_metric(results, "grad", "‖∂L/∂W_l‖ (Frobenius)", log_tanh=True),
    }


def _floats(d: Any) -> Any:
    """JSON stores inf/nan as strings: turn them back into floats."""
    if isinstance(d, dict):
        return {k: _floats(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_floats(v) for v in d]
    return float(d) if isinstance(d, str) and d in ("inf", "-inf", "nan") else d


def check(results: dict[str, Any]) -> None:
    s = _floats(results["summary"])
    # ReLU: Kaiming keeps the scale; Xavier/LeCun halves E[h²] per layer, so the std falls like
    # 2^(-L/2) ≈ 3e-8 at L = 50. At finite width n the log-norm also random-walks (variance
    # ≈ 5L/n, Hanin & Rolnick 2018), so "keeps" means within 4x, not exactly
    k = s["relu_kaiming"]
    assert 0.25 < k["std_last"]["mean"] / k["std_first"]["mean"] < 4.0, k
    assert s["relu_xavier"]["std_last"]["mean"] < 1e-4 * s["relu_xavier"]["std_first"]["mean"]
    assert abs(k["log10_grad_ratio"]["mean"]) < 0.5, k  # gradients the same size at every depth
    # ReLU is positively homogeneous: a scale c per layer multiplies every ∂L/∂W_l by the same
    # c^(L−1), so a wrong scale shifts the whole gradient profile (flat, but 1e-8 too small)
    kaiming_grad = min(results["curves"]["relu_kaiming"]["grad"])
    assert max(_floats(results["curves"]["relu_xavier"]["grad"])) < 1e-6 * kaiming_grad
    # too small: the signal is gone after a few layers, in both activations
    for act in ACTIVATIONS:
        assert s[f"{act}_small"]["std_last"]["mean"] < 1e-20
        assert s[f"{act}_large"]["std_last"]["mean"] > 100 * s[f"{act}_small"]["std_last"]["mean"]
    # too large with tanh: units saturate at ±1, where tanh' ≈ 0
    assert s["tanh_large"]["saturated_last"]["mean"] > 0.5
    # tanh with Xavier decays slowly; torch's 5/3 gain holds it up
    assert s["tanh_xavier_tanh_gain"]["std_last"]["mean"] > 2 * s["tanh_xavier"]["std_last"]["mean"]
    assert s["tanh_xavier_tanh_gain"]["std_last"]["mean"] > 0.3
    # the mean-field recursion predicts every tanh row that keeps a signal: the top std to 5 %,
    # the saturated fraction to 0.03 and the decades of gradient growth to 0.3
    for scheme in ("large", "xavier", "xavier_tanh_gain", "kaiming"):
        row, mf = s[f"tanh_{scheme}"], s[f"tanh_{scheme}"]["predicted"]
        assert abs(row["std_last"]["mean"] / mf["std_last"] - 1) < 0.05, (scheme, row, mf)
        assert abs(row["saturated_last"]["mean"] - mf["saturated_last"]) < 0.03, (scheme, mf)
        assert abs(row["log10_grad_ratio"]["mean"] - mf["log10_grad_ratio"]) < 0.3, (scheme, mf)
    # the 5/3 gain's stable fixed point is what layer 50 sits at
    assert abs(results["tanh_gain_fixed_point"]["std"]
               - s["tanh_xavier_tanh_gain"]["predicted"]["std_last"]) < 1e-3


EXPERIMENT = Experiment(
    name="stability_init_depth", stage=6, title="Activations and gradients through 50 layers",
    quick=Config(width=256, batch=32, seeds=(0, 1)), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"top std {v['std_last']['mean']:.2g}")
                       for k, v in r["summary"].items()],
    description="per-layer activation std and weight-gradient norm, 5 inits x tanh/ReLU",
)
