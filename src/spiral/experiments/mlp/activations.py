"""Activation functions in the MLP language model: loss, and how many ReLU units die.

Trains the same network with ReLU, tanh, GELU and SiLU (same seed, same recipe) and, for
ReLU, also at a learning rate ten times larger. A hidden unit is *dead* when its
local derivative σ'(a) is (numerically) zero on every one of ``probe_tokens`` validation
positions — for ReLU, a pre-activation ≤ 0 everywhere: no gradient reaches its incoming
weights, and nothing will revive it. The second figure draws each function
and its derivative (computed by our autograd). Chapter: stage 4 ("Activation functions").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.mlp.sweeps import fit, short_recipe, val_ids
from spiral.plotting import PALETTE, direct_label, new_figure

ACTS = ("relu", "tanh", "gelu", "silu")


@dataclass(frozen=True)
class Config:
    corpus: str = "names"
    activations: tuple[str, ...] = ACTS
    seeds: tuple[int, ...] = (0, 1)
    max_steps: int = 600
    batch_size: int = 16
    lr: float = 3e-3
    high_lr: float = 3e-2
    n_layers: int = 2
    d_hidden: int = 128
    probe_tokens: int = 4000


def derivative(name: str, a: np.ndarray) -> np.ndarray:
    """σ'(a) elementwise, by our autograd."""
    from spiral.autograd import Tensor
    from spiral.nn.activations import make_activation

    t = Tensor(a.astype(np.float64), requires_grad=True)
    make_activation(name)(t).sum().backward()
    return np.asarray(t.grad)


def unit_activity(model: Any, ids: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """(n_units,) fraction of probe positions where each hidden unit's σ'(a) ≥ tol.

    For ReLU that is the fraction of positions where the unit is on (a > 0).
    """
    from spiral.autograd import no_grad

    model.eval()
    with no_grad():
        feats = model.features(ids[None, :])  # [e, a_1, ..., a_L, h_L]
    name = model.config.activation
    live = [np.abs(derivative(name, a.data[0])) >= tol for a in feats[1:-1]]  # (T, d) each
    return np.concatenate([x.mean(axis=0) for x in live])


def dead_fraction(model: Any, ids: np.ndarray, tol: float = 1e-3) -> float:
    """Fraction of hidden units whose σ'(pre-activation) < tol on every probe position.

    For ReLU that is "pre-activation ≤ 0 everywhere" (the unit is dead for good); for tanh
    it would mean saturation; GELU and SiLU only flatten far left of zero.
    """
    return float((unit_activity(model, ids, tol) == 0).mean())


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    probe = val_ids(config.corpus, config.probe_tokens)
    out: dict[str, Any] = {}
    variants = [(a, config.lr) for a in config.activations] + [("relu", config.high_lr)]
    rows = []
    for act, lr in variants:
        key = act if lr == config.lr else f"{act}_high_lr"
        vals, dead, trains, zero_share = [], [], [], []
        hist = np.zeros(10)
        for seed in config.seeds:
            r = fit(config.corpus, seed, {"activation": act, "n_layers": config.n_layers,
                                          "d_hidden": config.d_hidden},
                    short_recipe(config.max_steps, config.batch_size, lr=lr))
            vals.append(r["val_nats"])
            trains.append(r["history"][-1]["train_loss"])
            activity = unit_activity(r["model"], probe)
            dead.append(float((activity == 0).mean()))
            zero_share.append(float(1.0 - activity.mean()))  # (position, unit) pairs with σ' ≈ 0
            hist += np.histogram(activity, bins=10, range=(0.0, 1.0))[0]
        out[key] = {"activation": act, "lr": lr, "val_nats": mean_sd(vals),
                    "train_nats": mean_sd(trains), "dead_fraction": mean_sd(dead),
                    "zero_gradient_share": mean_sd(zero_share),
                    "activity_histogram": (hist / hist.sum()).tolist()}
        rows.append([act, f"{lr:g}", f"{np.mean(trains):.3f}", f"{np.mean(vals):.3f}",
                     f"{100 * np.mean(dead):.1f} %", f"{100 * np.mean(zero_share):.0f} %"])
    return {"runs": out, "table": {"columns": ["activation", "learning rate", "train",
                                               "validation", "dead units",
                                               "zero-gradient share"], "rows": rows}}


def _curves() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from spiral.autograd import Tensor
    from spiral.nn.activations import make_activation

    x = np.linspace(-4, 4, 401)
    out = {}
    for name in ("relu", "tanh", "gelu", "silu"):
        t = Tensor(x, requires_grad=True)
        y = make_activation(name)(t)
        y.sum().backward()
        out[name] = (x, y.data, t.grad)
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (a1, a2) = new_figure(1, 2, width=8.0, height=3.2)
    for color, (name, (x, y, dy)) in zip(PALETTE, _curves().items()):
        a1.plot(x, y, color=color)
        offset = {"relu": 9, "gelu": 0, "silu": -9}.get(name, 0)  # three lines meet at x = 4
        direct_label(a1, list(x), list(y), name, color=color, dy=offset)
        a2.plot(x, dy, color=color)
        # gelu and relu both end at 1.0, silu just above: spread the three labels apart
        offset2 = {"silu": 4, "gelu": -5, "relu": -14}.get(name, 0)
        direct_label(a2, list(x), list(dy), name, color=color, dy=offset2)
    a1.set_title("σ(x)", loc="left", fontsize=9)
    a2.set_title("σ′(x), by autograd", loc="left", fontsize=9)
    for ax in (a1, a2):
        ax.set_xlabel("x")
    a1.set_ylim(-1.5, 4.2)
    fig2, ax = new_figure(width=5.6, height=3.0)
    runs = results["runs"]
    keys = list(runs)
    y = np.arange(len(keys))
    ax.barh(y, [100 * runs[k]["dead_fraction"]["mean"] for k in keys], color=PALETTE[1],
            height=0.6)
    ax.set_yticks(y, [f"{runs[k]['activation']} (lr {runs[k]['lr']:g})" for k in keys])
    ax.invert_yaxis()
    ax.set_xlabel("hidden units with σ′ < 10⁻³ on every probe position (%)")
    keys3 = [k for k in runs if runs[k]["activation"] in ("relu", "tanh")]
    fig3, axes = new_figure(1, len(keys3), width=2.6 * len(keys3), height=2.6, sharey=True)
    centers = (np.arange(10) + 0.5) / 10
    for ax, k in zip(np.atleast_1d(axes), keys3):
        ax.bar(centers, runs[k]["activity_histogram"], width=0.09, color=PALETTE[0])
        ax.set_title(f"{runs[k]['activation']} (lr {runs[k]['lr']:g})", loc="left", fontsize=9)
        ax.set_xlabel("share of positions with σ′ ≥ 10⁻³")
    np.atleast_1d(axes)[0].set_ylabel("share of hidden units")
    return {"activations": fig, "dead_units": fig2, "unit_activity": fig3}


def check(results: dict[str, Any]) -> None:
    runs = results["runs"]
    # tanh/GELU/SiLU derivatives vanish only asymptotically; ReLU's is exactly 0 for a <= 0.
    # The measured claim: ReLU's dead fraction is the largest, and a large learning rate
    # kills more ReLU units than a small one.
    smooth = [runs[k]["dead_fraction"]["mean"] for k in runs if runs[k]["activation"] != "relu"]
    relu = [runs[k]["dead_fraction"]["mean"] for k in runs if runs[k]["activation"] == "relu"]
    assert max(smooth, default=0.0) <= min(relu), (smooth, relu)
    assert relu[-1] > relu[0], relu


EXPERIMENT = Experiment(
    name="mlp_activations", stage=4, title="Activations and dead ReLUs",
    quick=Config(activations=("relu", "tanh"), seeds=(0,), max_steps=100, batch_size=8,
                 high_lr=0.1, probe_tokens=2000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{k} val / dead", f"{v['val_nats']['mean']:.3f} / "
                        f"{100 * v['dead_fraction']['mean']:.1f}%") for k, v in r["runs"].items()],
)
