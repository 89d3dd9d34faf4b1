"""The trade-offs of stage 2, measured: precision of derivatives and the cost of a dynamic graph.

*Precision.* The limit definition turned into arithmetic, (f(x+h) - f(x))/h, has two errors:
truncation, h·f''/2 (central differences: h²·f'''/6), which shrinks with h, and rounding,
about ε·|f|/h, which grows as h shrinks (ε = machine epsilon). Their sum is smallest near
h ≈ √ε (one-sided) or h ≈ ε^(1/3) (central), so the best attainable error is about √ε or
ε^(2/3): ~1e-8 / ~1e-11 in float64 but ~3e-4 / ~2e-5 in float32 — why gradient checks run in
float64. Automatic differentiation has no truncation error at all. We also time a float32 and
a float64 training step of the same MLP.

*Graph type.* A dynamic ("define-by-run") engine such as ours or PyTorch's records the graph
again on every forward pass; we measure what that bookkeeping costs by timing the same
forward pass with and without recording (``no_grad``).
Chapter: stage 2, "Trade-offs".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from spiral.autograd import Tensor, no_grad
from spiral.experiments.framework import Experiment


@dataclass(frozen=True)
class Config:
    x0: float = 0.7
    # the same sweep at 21 nearby points: how typical is x0's best error?
    x0_scan: tuple[float, ...] = tuple(round(0.6 + 0.01 * k, 2) for k in range(21))
    log10_h: tuple[float, ...] = tuple(-0.5 * k for k in range(1, 27))  # 10^-0.5 .. 10^-13
    batch: int = 64
    d_model: int = 256
    depth: int = 4
    small_d_model: int = 16
    repeats: int = 31


def _f(x: Any) -> Any:
    return np.sin(x) * np.exp(x)  # f' = e^x (sin x + cos x)


def difference_errors(config: Config, dtype: Any,
                      x0: float | None = None) -> dict[str, list[float]]:
    """|difference quotient - f'(x₀)| for every h, evaluated in ``dtype`` arithmetic."""
    x0 = config.x0 if x0 is None else x0
    x = dtype(x0)
    exact = np.exp(x0) * (np.sin(x0) + np.cos(x0))
    fwd, ctr = [], []
    for e in config.log10_h:
        h = dtype(10.0**e)
        fwd.append(abs(float((_f(x + h) - _f(x)) / h) - exact))
        ctr.append(abs(float((_f(x + h) - _f(x - h)) / (dtype(2) * h)) - exact))
    return {"forward": fwd, "central": ctr}


def bounds(x0: float, eps: float) -> dict[str, float]:
    """Worst-case error at the optimal step, each evaluation charged the full rounding ε|f|:
    one-sided min_h |f2| h/2 + 2ε|f|/h = 2√(ε|f||f2|), central min_h |f3| h²/6 + ε|f|/h."""
    f = abs(np.sin(x0) * np.exp(x0))
    f2 = abs(2 * np.exp(x0) * np.cos(x0))  # f'' = 2eˣ cos x
    f3 = abs(2 * np.exp(x0) * (np.cos(x0) - np.sin(x0)))  # f''' = 2eˣ(cos x − sin x)
    hc = (3 * eps * f / f3) ** (1 / 3)
    return {"forward": float(2 * np.sqrt(eps * f * f2)),
            "central": float(f3 * hc**2 / 6 + eps * f / hc), "f2": float(f2)}


def scan(config: Config, dtype: Any) -> dict[str, Any]:
    """Best one-sided and central errors at every x₀ of the scan, and their bounds."""
    eps = float(np.finfo(dtype).eps)
    best: dict[str, list[float]] = {"forward": [], "central": []}
    for x0 in config.x0_scan:
        errs = difference_errors(config, dtype, x0)
        for k in best:
            best[k].append(min(errs[k]))
    out: dict[str, Any] = {"x0": list(config.x0_scan)}
    for k, v in best.items():
        b = np.asarray([bounds(x0, eps)[k] for x0 in config.x0_scan])
        out[k] = {"best": v, "min": float(min(v)), "max": float(max(v)),
                  "median": float(np.median(v)),
                  "bound_median": float(np.median(b)),
                  "median_ratio_to_bound": float(np.median(np.asarray(v) / b))}
    return out


def _mlp(config: Config, dtype: Any, rng: np.random.Generator) -> tuple[list[Tensor], Tensor]:
    ws = [Tensor((rng.standard_normal((config.d_model, config.d_model)) /
                  np.sqrt(config.d_model)).astype(dtype), requires_grad=True)
          for _ in range(config.depth)]
    x = Tensor(rng.standard_normal((config.batch, config.d_model)).astype(dtype))
    return ws, x


def _step(ws: list[Tensor], x: Tensor) -> Tensor:
    h = x
    for w in ws:
        h = (h @ w).tanh()  # (B, d_model) @ (d_model, d_model) -> (B, d_model)
    return (h * h).mean()


def _timed(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, interleaved so a noisy neighbour hurts all alike,
    on one BLAS thread (two threads on a shared two-core machine stall unpredictably)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the test extra
        return _timed_unpinned(fns, repeats)
    with threadpool_limits(limits=1):
        return _timed_unpinned(fns, repeats)


def _timed_unpinned(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in ts.items()}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"log10_h": list(config.log10_h)}
    for name, dtype in (("float32", np.float32), ("float64", np.float64)):
        errs = difference_errors(config, dtype)
        best = {k: int(np.argmin(v)) for k, v in errs.items()}
        out[name] = {
            **errs,
            "eps": float(np.finfo(dtype).eps),
            "best_forward": errs["forward"][best["forward"]],
            "best_central": errs["central"][best["central"]],
            "best_h_forward": 10.0 ** config.log10_h[best["forward"]],
            "best_h_central": 10.0 ** config.log10_h[best["central"]],
            "bound": bounds(config.x0, float(np.finfo(dtype).eps)),
            # truncation alone at the best one-sided step: |f''| h / 2
            "truncation_at_best_forward": bounds(config.x0, 0.0)["f2"] / 2
            * 10.0 ** config.log10_h[best["forward"]],
            "scan": scan(config, dtype),
        }
    # autodiff in float32 vs a float64 reference: rounding only, no truncation
    seed = int(rng.integers(1 << 31))
    ws64, x64 = _mlp(config, np.float64, np.random.default_rng(seed))
    ws32, x32 = _mlp(config, np.float32, np.random.default_rng(seed))
    _step(ws64, x64).backward()
    _step(ws32, x32).backward()
    rel = max(float(np.max(np.abs(a.grad - b.grad)) / np.max(np.abs(a.grad)))
              for a, b in zip(ws32, ws64))
    out["autodiff_float32_rel_error"] = rel

    def train_step(ws: list[Tensor], x: Tensor) -> None:
        for w in ws:
            w.grad = None
        _step(ws, x).backward()

    def record(ws: list[Tensor], x: Tensor) -> None:
        _step(ws, x)

    def no_record(ws: list[Tensor], x: Tensor) -> None:
        with no_grad():
            _step(ws, x)

    a32, b32 = x32.data, ws32[0].data
    a64, b64 = x64.data, ws64[0].data
    small = Config(batch=config.batch, d_model=config.small_d_model, depth=config.depth)
    ws_s, x_s = _mlp(small, np.float32, rng)
    t = _timed({"32": lambda: train_step(ws32, x32), "64": lambda: train_step(ws64, x64),
                "rec": lambda: record(ws32, x32), "plain": lambda: no_record(ws32, x32),
                "rec_s": lambda: record(ws_s, x_s), "plain_s": lambda: no_record(ws_s, x_s),
                "mm32": lambda: a32 @ b32, "mm64": lambda: a64 @ b64},
               config.repeats)
    t32, t64, t_rec, t_plain = t["32"], t["64"], t["rec"], t["plain"]
    out.update({
        "step_ms_float32": 1e3 * t32, "step_ms_float64": 1e3 * t64,
        "float64_over_float32": t64 / t32,
        "matmul_float64_over_float32": t["mm64"] / t["mm32"],  # NumPy alone, for context
        "forward_ms_recording": 1e3 * t_rec, "forward_ms_no_grad": 1e3 * t_plain,
        "recording_overhead": t_rec / t_plain - 1.0,
        "forward_ms_recording_small": 1e3 * t["rec_s"],
        "forward_ms_no_grad_small": 1e3 * t["plain_s"],
        "recording_overhead_small": t["rec_s"] / t["plain_s"] - 1.0,
        # the extra time per forward pass in µs: it scales with the arrays, not the node count
        "recording_extra_us": 1e6 * (t_rec - t_plain),
        "recording_extra_us_small": 1e6 * (t["rec_s"] - t["plain_s"]),
        "load_average_1min": os.getloadavg()[0],  # a shared machine: timings are labelled
    })
    f32, f64 = out["float32"], out["float64"]
    out["table"] = {
        "columns": ["", "float32", "float64"],
        "rows": [
            ["machine epsilon ε", f"{f32['eps']:.1e}", f"{f64['eps']:.1e}"],
            ["best one-sided difference error", f"{f32['best_forward']:.1e}",
             f"{f64['best_forward']:.1e}"],
            ["best central difference error", f"{f32['best_central']:.1e}",
             f"{f64['best_central']:.1e}"],
            ["autodiff gradient, relative error vs float64", f"{rel:.1e}", "reference"],
            [f"MLP training step, d_model {config.d_model} (ms, median)", f"{1e3 * t32:.2f}",
             f"{1e3 * t64:.2f}"],
        ],
    }
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    h = 10.0 ** np.asarray(results["log10_h"])
    fig, axes = new_figure(1, 2, width=7.6, height=3.2, sharey=True)
    for ax, name in zip(axes, ("float64", "float32")):
        r = results[name]
        for key, label, color, dy in (("forward", "one-sided", PALETTE[0], 9),
                                      ("central", "central", PALETTE[1], -11)):
            err = np.maximum(np.asarray(r[key]), 1e-17)  # an exact hit would be log(0)
            ax.loglog(h, err, "o-", color=color, ms=2.5)
            i = int(np.argmax(h < 10.0 ** -0.9))
            direct_label(ax, [h[i]], [err[i]], label, color=color, dy=dy)
        ax.axvline(np.sqrt(r["eps"]), color="#bbbbbb", lw=0.8, ls=":")
        ax.set_xlabel("step h")
        ax.set_title(f"{name}: truncation falls, rounding rises", loc="left", fontsize=9)
        ax.invert_xaxis()
    axes[0].set_ylabel("|difference quotient − f′(x)|")
    return {"difference_error": fig}


def check(results: dict[str, Any]) -> None:
    f32, f64 = results["float32"], results["float64"]
    # best errors: about √ε one-sided and ε^(2/3) central (within a factor of 30)
    for r in (f32, f64):
        assert r["best_forward"] < 30 * np.sqrt(r["eps"])
        assert r["best_central"] < 30 * r["eps"] ** (2 / 3)
        assert r["best_central"] < r["best_forward"]
    # float32 cannot check a gradient to 1e-6; float64 can, by orders of magnitude
    assert f32["best_central"] > 1e-6 > 100 * f64["best_central"]
    # truncation regime (large h): one-sided error ∝ h, central ∝ h²
    logh = np.asarray(results["log10_h"][:6])
    slope_f = np.polyfit(logh, np.log10(f64["forward"][:6]), 1)[0]
    slope_c = np.polyfit(logh, np.log10(f64["central"][:6]), 1)[0]
    assert abs(slope_f - 1) < 0.2 and abs(slope_c - 2) < 0.3, (slope_f, slope_c)
    # autodiff has no truncation error: float32 gradients agree with float64 to ~1e-6
    assert results["autodiff_float32_rel_error"] < 1e-4
    # one x₀ is one draw: across nearby x₀ the best float32 one-sided error spreads over more
    # than a decade, and its median sits below the worst-case bound, within a factor of 20
    sc = f32["scan"]["forward"]
    assert sc["max"] > 10 * sc["min"], sc
    assert 0.05 < sc["median_ratio_to_bound"] < 1, sc
    # at x₀ = 0.7 truncation alone exceeds the measured total: rounding cancelled part of it
    assert f32["truncation_at_best_forward"] > f32["best_forward"]


EXPERIMENT = Experiment(
    name="autodiff_tradeoffs", stage=2, title="Precision of derivatives and the cost of recording",
    quick=Config(batch=16, d_model=64, depth=2, repeats=3), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("best central diff error fp32", f"{r['float32']['best_central']:.1e}"),
                       ("best central diff error fp64", f"{r['float64']['best_central']:.1e}"),
                       ("fp64/fp32 step time", round(r["float64_over_float32"], 2)),
                       ("graph recording overhead", round(r["recording_overhead"], 2))],
)
