"""Adam's moments over training, bias correction, and what warmup does to early updates.

Adam keeps exponential moving averages mₜ = β₁mₜ₋₁ + (1 − β₁)gₜ and vₜ = β₂vₜ₋₁ + (1 − β₂)gₜ²
started at zero, so E[mₜ] = (1 − β₁ᵗ) E[g] and E[vₜ] = (1 − β₂ᵗ) E[g²] for a stationary
gradient: dividing by (1 − βᵗ) removes the bias. Without the correction the update is

    mₜ / √vₜ = m̂ₜ / √v̂ₜ · (1 − β₁ᵗ) / √(1 − β₂ᵗ),

about 3.2× too large at t = 1 and up to ≈ 6.5× near t = 10 for (β₁, β₂) = (0.9, 0.999).
Four measurements on the tiny names MLP (``optim_tiny_lm``):

1. the moments of one weight matrix over training, raw and bias-corrected, against the
   running mean of g and g² (what they estimate);
2. the size of the update with and without bias correction, against the formula above;
3. at initialisation, the spread (across independent minibatch sequences) of Adam's
   per-coordinate step scale 1/√v̂ₜ, which is wide for small t — the variance argument for
   warmup (Liu et al. 2020);
4. training at large learning rates with and without linear warmup.

Chapter: stage 5, "Adam in full" and "Warmup".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.optimization.tiny_lm import TinyLM, init_params, loss, names_examples, train
from spiral.optim import Adam
from spiral.optim.schedules import linear_warmup


class AdamNoBiasCorrection(Adam):
    """Adam with the bias correction removed (an ablation; not in PyTorch)."""

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, eps = group["lr"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self._state(p)
            if not state:
                state.update(step=0, exp_avg=np.zeros_like(p.data),
                             exp_avg_sq=np.zeros_like(p.data))
            state["step"] += 1
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (p.grad - m)
            v *= beta2
            v += (1 - beta2) * (p.grad * p.grad)
            p.data -= lr * (m / (np.sqrt(v) + eps))     # raw moments: no 1/(1 − βᵗ)


@dataclass(frozen=True)
class Config:
    lr: float = 1e-2
    steps: int = 1000
    variance_steps: int = 100     # steps of the at-initialisation variance study
    variance_replicates: int = 20
    warmup_lrs: tuple[float, ...] = (1e-2, 3e-2, 1e-1)
    warmup_steps: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    model: TinyLM = TinyLM()


def _tracked(config: Config, opt_cls: type, seed: int) -> dict[str, Any]:
    """Train with ``opt_cls``; record W₁'s moments, the running means and update sizes."""
    rec: dict[str, list[float]] = {k: [] for k in
                                   ("m", "m_hat", "v", "v_hat", "g_mean", "g2_mean", "update")}
    beta1, beta2 = 0.9, 0.999
    sums: dict[str, Any] = {}
    prev: dict[str, Any] = {}

    def on_step(step: int, params: list[Any], opt: Any) -> None:
        w1 = params[1]
        t = step + 1
        g = w1.grad
        sums["g"] = sums.get("g", 0.0) + g
        sums["g2"] = sums.get("g2", 0.0) + g * g
        s = opt.state[id(w1)]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        rec["m"].append(float(np.mean(np.abs(m))))
        rec["m_hat"].append(float(np.mean(np.abs(m))) / (1 - beta1**t))
        rec["v"].append(float(np.mean(v)))
        rec["v_hat"].append(float(np.mean(v)) / (1 - beta2**t))
        rec["g_mean"].append(float(np.mean(np.abs(sums["g"] / t))))
        rec["g2_mean"].append(float(np.mean(sums["g2"] / t)))
        rms = float(np.sqrt(np.mean((w1.data - prev["w1"]) ** 2)))
        rec["update"].append(rms / opt.param_groups[0]["lr"])      # in units of lr
        prev["w1"] = w1.data.copy()

    class Recording(opt_cls):
        def step(self, closure: Any = None) -> Any:
            prev["w1"] = self.param_groups[0]["params"][1].data.copy()
            return super().step(closure)

    r = train(config.model, lambda ps: Recording(ps, lr=config.lr), config.steps,
              np.random.default_rng(seed), on_step=on_step)
    return {"losses": r["losses"], "tune_loss": r["tune_loss"], "diverged": r["diverged"], **rec}


def _step_scale_spread(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    """Relative sd across replicates of 1/√v̂ₜ per coordinate of W₁, at fixed init params."""
    ex = names_examples(config.model.context)
    params = init_params(config.model, ex["vocab_size"], np.random.default_rng(0))
    fit_x, fit_y = ex["fit"]
    beta2 = 0.999
    n_rep, n_t = config.variance_replicates, config.variance_steps
    scale = np.empty((n_rep, n_t, *params[1].shape))
    for r in range(n_rep):
        v = np.zeros(params[1].shape)
        for t in range(1, n_t + 1):
            idx = rng.integers(0, len(fit_x), size=config.model.batch_size)
            for p in params:
                p.grad = None
            loss(params, fit_x[idx], fit_y[idx]).backward()
            g = params[1].grad.astype(np.float64)
            v = beta2 * v + (1 - beta2) * g * g
            scale[r, t - 1] = 1.0 / (np.sqrt(v / (1 - beta2**t)) + 1e-8)
    rel_sd = scale.std(axis=0, ddof=1) / scale.mean(axis=0)          # (T, fan_in, hidden)
    median = np.median(rel_sd.reshape(n_t, -1), axis=1)
    return {"t": list(range(1, n_t + 1)), "median_rel_sd": median.tolist()}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = config.seeds[0]
    with_bc = _tracked(config, Adam, seed)
    without_bc = _tracked(config, AdamNoBiasCorrection, seed)
    t = np.arange(1, config.steps + 1)
    formula = (1 - 0.9**t) / np.sqrt(1 - 0.999**t)
    n = min(len(with_bc["update"]), len(without_bc["update"]))
    ratio = np.asarray(without_bc["update"][:n]) / np.asarray(with_bc["update"][:n])
    spread = _step_scale_spread(config, rng)

    warm: dict[str, Any] = {}
    rows = []
    for lr in config.warmup_lrs:
        for use_warmup in (False, True):
            finals, early, diverged, curves = [], [], 0, []
            for s in config.seeds:
                sched = linear_warmup(lr, config.warmup_steps) if use_warmup else None
                r = train(config.model, partial(Adam, lr=lr), config.steps,
                          np.random.default_rng(s), lr_at=sched)
                diverged += r["diverged"]
                finals.append(r["tune_loss"])
                early.append(float(np.max(r["losses"][: config.warmup_steps])))
                curves.append(r["losses"])
            key = f"{lr:g}/{'warmup' if use_warmup else 'none'}"
            warm[key] = {"lr": lr, "warmup": use_warmup, "diverged": diverged,
                         "final": mean_sd(finals) if diverged == 0 else None,
                         "early_peak": mean_sd(early), "curve": curves[0]}
            rows.append([f"{lr:g}", "yes" if use_warmup else "no",
                         f"{diverged}/{len(config.seeds)}",
                         "diverged" if diverged else f"{np.mean(finals):.3f} ± "
                         f"{np.std(finals, ddof=1) if len(finals) > 1 else 0.0:.3f}",
                         f"{np.mean(early):.2f}"])
    return {
        "moments": with_bc,
        "update_ratio": ratio.tolist(),
        "update_ratio_formula": formula[:n].tolist(),
        "peak_ratio": float(ratio[:200].max()), "peak_ratio_step": int(ratio[:200].argmax()) + 1,
        "peak_formula": float(formula[:200].max()),
        "no_bc_tune_loss": without_bc["tune_loss"], "bc_tune_loss": with_bc["tune_loss"],
        "spread": spread,
        "spread_t1": spread["median_rel_sd"][0], "spread_tlast": spread["median_rel_sd"][-1],
        "warmup": warm,
        "warmup_table": {"columns": ["Adam lr", "warmup (100 steps)", "runs diverged",
                                     "tune loss (nats)", "worst loss in first 100 steps"],
                         "rows": rows},
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    mom = results["moments"]
    t = np.arange(1, len(mom["m"]) + 1)
    fig1, (a1, a2) = new_figure(1, 2, width=9.0, height=3.4)
    for ax, raw, hat, ref, title in [(a1, "m", "m_hat", "g_mean", "first moment, mean |·|"),
                                     (a2, "v", "v_hat", "g2_mean", "second moment, mean")]:
        order = sorted((raw, hat, ref), key=lambda k: mom[k][-1])   # fan labels out by end
        for key, color, label in [(raw, PALETTE[1], "raw"), (hat, PALETTE[0], "bias-corrected"),
                                  (ref, PALETTE[6], "running mean")]:
            ax.loglog(t, mom[key], color=color, lw=1.2)
            direct_label(ax, t.tolist(), mom[key], label, color=color,
                         dy=9 * (order.index(key) - 1))
        ax.set_xlabel("step")
        ax.set_title(title)
    a1.set_ylabel("mean |m| over the weight matrix")
    a2.set_ylabel("mean v over the weight matrix")
    fig2, (b1, b2) = new_figure(1, 2, width=9.0, height=3.4)
    ratio = np.asarray(results["update_ratio"])
    tt = np.arange(1, len(ratio) + 1)
    b1.semilogx(tt, ratio, color=PALETTE[1], lw=1.0)
    b1.semilogx(tt, results["update_ratio_formula"], color=PALETTE[0], lw=1.0, ls="--")
    direct_label(b1, tt.tolist(), results["update_ratio_formula"], "(1−β₁ᵗ)/√(1−β₂ᵗ)",
                 color=PALETTE[0])
    b1.set_xlabel("step")
    b1.set_ylabel("update size: no correction / corrected")
    sp = results["spread"]
    b2.loglog(sp["t"], sp["median_rel_sd"], color=PALETTE[2])
    b2.set_xlabel("step t (parameters frozen at initialisation)")
    b2.set_ylabel("relative sd of 1/√v̂ₜ (median)")
    b2.set_title("Adam's step scale is noisy early")
    fig3, ax = new_figure(width=6.4, height=3.6)
    for i, w in enumerate(results["warmup"].values()):
        y = np.asarray(w["curve"], dtype=float)
        k = max(1, len(y) // 100)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        steps = np.arange(k, len(y) + 1)   # a trailing mean, drawn at its window's last step
        color = PALETTE[i // 2]
        ax.semilogx(steps, smooth, color=color, ls="-" if w["warmup"] else ":")
        direct_label(ax, steps.tolist(), smooth.tolist(),
                     f"lr {w['lr']:g}{' + warmup' if w['warmup'] else ''}", color=color,
                     dy=6 if w["warmup"] else -6)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (nats, mean of last {k} steps)")
    ax.set_title("Adam with and without 100 warmup steps (dotted: none)")
    return {"moments": fig1, "bias_correction": fig2, "warmup": fig3}


def check(results: dict[str, Any]) -> None:
    mom = results["moments"]
    # bias-corrected second moment tracks the running mean of g² from step 1; raw is ~t/1000
    assert abs(math.log(mom["v_hat"][0] / mom["g2_mean"][0])) < 1e-3
    assert mom["v"][0] < 0.01 * mom["g2_mean"][0]
    # without correction early updates are several times larger, as the formula predicts
    assert results["peak_ratio"] > 3.0
    assert abs(results["peak_ratio"] - results["peak_formula"]) < 0.25 * results["peak_formula"]
    # the step scale 1/√v̂ is far noisier at t = 1 than after the variance study's last step
    assert results["spread_t1"] > 3 * results["spread_tlast"]
    # warmup: the early losses at the largest lr are lower with warmup than without
    lr = max(w["lr"] for w in results["warmup"].values())
    no, yes = results["warmup"][f"{lr:g}/none"], results["warmup"][f"{lr:g}/warmup"]
    assert yes["early_peak"]["mean"] < no["early_peak"]["mean"]


EXPERIMENT = Experiment(
    name="optim_adam_moments", stage=5, title="Adam's moments, bias correction and warmup",
    quick=Config(steps=200, variance_steps=30, variance_replicates=8, warmup_lrs=(1e-1,),
                 warmup_steps=50, seeds=(0,)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("peak update ratio without correction", f"{r['peak_ratio']:.2f}"),
                       ("formula", f"{r['peak_formula']:.2f}")],
    description="Adam's raw and corrected moments, update size without correction, warmup",
)
