"""Gradient descent on quadratics of growing condition number: measured vs derived rate.

On f(θ) = ½ θᵀAθ with eigenvalues λ₁ ≤ … ≤ λₙ of A, gradient descent θₜ₊₁ = (I − ηA)θₜ
shrinks the eigen-component i by |1 − ηλᵢ| per step, so the error contracts by

    ρ(η) = maxᵢ |1 − ηλᵢ|,   minimised by η* = 2 / (λ₁ + λₙ):  ρ* = (κ − 1) / (κ + 1),

with κ = λₙ / λ₁. Heavy-ball momentum with Polyak's tuning (η = 4 / (√λₙ + √λ₁)²,
μ = ((√κ − 1) / (√κ + 1))²) contracts at (√κ − 1) / (√κ + 1) asymptotically. We run
``spiral.optim.SGD`` (plain and with momentum) on rotated quadratics in n dimensions with
eigenvalues log-spaced in [1, κ], fit the per-step contraction from the slope of log‖θₜ‖,
and compare it with the formulas; we also count steps to a 10⁻⁶ relative error.
Chapter: stage 5, "Gradient descent on a quadratic".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment
from spiral.optim import SGD


@dataclass(frozen=True)
class Config:
    kappas: tuple[float, ...] = (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
    dim: int = 50
    max_steps: int = 20_000
    tol: float = 1e-6             # "converged": relative error below this
    fit_tol: float = 1e-12        # runs continue to here so the fit sees the asymptotic rate
    seeds: tuple[int, ...] = (0, 1, 2)


def quadratic(kappa: float, dim: int, rng: np.random.Generator) -> np.ndarray:
    """A = Q diag(λ) Qᵀ with λ log-spaced in [1, κ] and Q a random rotation."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lam = np.geomspace(1.0, kappa, dim)
    return (q * lam) @ q.T


def descend(a: np.ndarray, theta0: np.ndarray, lr: float, momentum: float, max_steps: int,
            tol: float) -> list[float]:
    """‖θₜ‖ / ‖θ₀‖ for t = 0, 1, … until it drops below ``tol``, using spiral.optim.SGD."""
    p = Tensor(theta0.copy(), requires_grad=True)
    opt = SGD([p], lr=lr, momentum=momentum)
    norm0 = float(np.linalg.norm(theta0))
    errors = [1.0]
    for _ in range(max_steps):
        p.grad = a @ p.data                            # ∇f(θ) = Aθ
        opt.step()
        errors.append(float(np.linalg.norm(p.data)) / norm0)
        if errors[-1] < tol:
            break
    return errors


def fitted_rate(errors: list[float]) -> float:
    """Per-step contraction: exp of the slope of log error over the second half of the run."""
    e = np.log(np.asarray(errors))
    t = np.arange(len(e))
    half = len(e) // 2
    slope = np.polyfit(t[half:], e[half:], 1)[0]
    return float(math.exp(slope))


def steps_to(errors: list[float], tol: float) -> int:
    """The first step whose relative error is below ``tol``."""
    return int(np.argmax(np.asarray(errors) < tol))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    rows: list[list[str]] = []
    per_kappa: list[dict[str, Any]] = []
    for kappa in config.kappas:
        gd_rates, hb_rates, gd_steps, hb_steps, curves = [], [], [], [], {}
        for seed in config.seeds:
            local = np.random.default_rng([seed, int(kappa)])
            a = quadratic(kappa, config.dim, local)
            theta0 = local.standard_normal(config.dim)
            lmin, lmax = 1.0, kappa
            gd = descend(a, theta0, 2 / (lmin + lmax), 0.0, config.max_steps, config.fit_tol)
            sq = math.sqrt(kappa)
            mu = ((sq - 1) / (sq + 1)) ** 2
            hb = descend(a, theta0, 4 / (math.sqrt(lmax) + math.sqrt(lmin)) ** 2, mu,
                         config.max_steps, config.fit_tol)
            gd_rates.append(fitted_rate(gd))
            hb_rates.append(fitted_rate(hb))
            gd_steps.append(steps_to(gd, config.tol))
            hb_steps.append(steps_to(hb, config.tol))
            if seed == config.seeds[0]:
                curves = {"gd": gd, "momentum": hb}
        derived = (kappa - 1) / (kappa + 1)
        derived_hb = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
        entry: dict[str, Any] = {
            "kappa": kappa, "derived_rate": derived, "measured_rate": float(np.mean(gd_rates)),
            "measured_rate_sd": float(np.std(gd_rates, ddof=1)),
            "derived_momentum_rate": derived_hb,
            "measured_momentum_rate": float(np.mean(hb_rates)),
            "gd_steps": float(np.mean(gd_steps)), "momentum_steps": float(np.mean(hb_steps)),
            "predicted_gd_steps": math.log(config.tol) / math.log(derived),
            "curves": curves,
        }
        per_kappa.append(entry)
        rows.append([f"{kappa:g}", f"{derived:.5f}", f"{entry['measured_rate']:.5f}",
                     f"{entry['predicted_gd_steps']:.0f}", f"{entry['gd_steps']:.0f}",
                     f"{derived_hb:.5f}", f"{entry['measured_momentum_rate']:.5f}",
                     f"{entry['momentum_steps']:.0f}"])
    worst = max(abs(e["measured_rate"] - e["derived_rate"]) / (1 - e["derived_rate"])
                for e in per_kappa)
    by_kappa = {f"{e['kappa']:g}": {k: v for k, v in e.items() if k != "curves"}
                for e in per_kappa}
    return {
        "per_kappa": per_kappa, "by_kappa": by_kappa,
        "worst_relative_gap": worst,   # |measured − derived| / (1 − derived): error in 1 − ρ
        "table": {"columns": ["κ", "GD rate (derived)", "GD rate (measured)",
                              "steps to 1e-6 (derived)", "steps (measured)",
                              "momentum rate (derived)", "momentum rate (measured)",
                              "momentum steps"], "rows": rows},
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    fig, (ax1, ax2) = new_figure(1, 2, width=9.0, height=3.6)
    for i, e in enumerate(results["per_kappa"]):
        y = e["curves"]["gd"]
        ax1.semilogy(np.arange(len(y)), y, color=PALETTE[i % len(PALETTE)])
        direct_label(ax1, [len(y) - 1], [y[-1]], f"κ={e['kappa']:g}",
                     color=PALETTE[i % len(PALETTE)])
    ax1.set_xscale("log")
    ax1.set_xlabel("step (log scale)")
    ax1.set_ylabel("‖θₜ‖ / ‖θ₀‖")
    ax1.set_title("GD with η = 2/(λmin + λmax)")
    kap = np.array([e["kappa"] for e in results["per_kappa"]])
    fine = np.geomspace(kap.min(), kap.max(), 200)
    for derived, meas, color, name in [
        ((fine - 1) / (fine + 1), "measured_rate", PALETTE[0], "GD"),
        ((np.sqrt(fine) - 1) / (np.sqrt(fine) + 1), "measured_momentum_rate",
         PALETTE[1], "heavy ball"),
    ]:
        ax2.loglog(fine, 1 - derived, color=color, lw=1.0)
        ax2.loglog(kap, [1 - e[meas] for e in results["per_kappa"]], "o", color=color, ms=4)
        direct_label(ax2, fine.tolist(), (1 - derived).tolist(), name, color=color)
    ax2.set_xlabel("condition number κ")
    ax2.set_ylabel("1 − rate (progress per step)")
    ax2.set_title("derived (line) vs measured (dots)")
    return {"rates": fig}


def check(results: dict[str, Any]) -> None:
    for e in results["per_kappa"]:
        # the fitted asymptotic contraction matches the derived one: gap < 2 % of (1 − ρ)
        assert abs(e["measured_rate"] - e["derived_rate"]) < 0.02 * (1 - e["derived_rate"]), e
        # steps to tolerance within 5 % (+ 3 steps) of log(tol) / log ρ — no faster than ρ allows
        assert e["gd_steps"] <= 1.05 * e["predicted_gd_steps"] + 3, e
        # momentum is at least as fast as its derived rate predicts (up to a 10 % slack in 1−ρ)
        assert 1 - e["measured_momentum_rate"] > 0.9 * (1 - e["derived_momentum_rate"]), e
    steps = [e["gd_steps"] for e in results["per_kappa"]]
    assert steps == sorted(steps)                  # harder with κ
    big = results["per_kappa"][-1]
    assert big["momentum_steps"] < big["gd_steps"] / 3   # √κ vs κ


EXPERIMENT = Experiment(
    name="optim_quadratic_convergence", stage=5, title="GD on quadratics: rate vs κ",
    quick=Config(kappas=(3.0, 10.0, 100.0), dim=20, seeds=(0, 1, 2)), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"κ={e['kappa']:g}", f"{e['measured_rate']:.4f} vs "
                        f"{e['derived_rate']:.4f}") for e in r["per_kappa"]],
    description="gradient descent's measured contraction per step against (κ−1)/(κ+1)",
)
