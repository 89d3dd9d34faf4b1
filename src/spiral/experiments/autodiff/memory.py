"""The memory cost of reverse mode: live activation bytes through one MLP training step.

Reverse mode needs, during the backward pass, values computed in the forward pass (the
input of a product, the output of a tanh), so it must keep them: for an MLP of ``depth``
layers of width ``d_model`` on a batch of B examples, about k·B·d_model floats per layer,

    stored activations ≈ depth × k · B · d_model · bytes-per-float,

which is O(depth × width) and independent of how many parameters there are. Inference
(under ``no_grad``) keeps only the current layer's arrays: O(width). We measure both with
the Tensor engine's allocation hook (`spiral.autograd.hooks`), which reports every array a
Tensor owns as it is allocated and freed, and draw the timeline of one training step. A
liveness analysis of the same recorded graph shows the least an engine that frees each
activation as soon as its backward step has run can hold, and the check holds ours to it
(gradient checkpointing, Chen et al. 2016, stage 12, trades memory further against
recomputation). Chapter: stage 2, "What reverse
mode costs in memory".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor, no_grad
from spiral.autograd.hooks import register_allocation_hook
from spiral.experiments.framework import Experiment


@dataclass(frozen=True)
class Config:
    batch: int = 64
    d_model: int = 256
    depth: int = 4
    depths: tuple[int, ...] = (1, 2, 4, 8, 16)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    repeats: int = 7


class LiveBytes:
    """An allocation hook that keeps the running total of live bytes after every event,
    and when (perf_counter seconds) the event happened."""

    def __init__(self) -> None:
        self.live = 0
        self.timeline: list[int] = []
        self.times: list[float] = []

    def __call__(self, event: str, nbytes: int, tensor_id: int) -> None:
        self.live += nbytes if event == "alloc" else -nbytes
        self.timeline.append(self.live)
        self.times.append(time.perf_counter())


def make_mlp(d_model: int, depth: int, rng: np.random.Generator) -> list[tuple[Tensor, Tensor]]:
    """``depth`` tanh layers of width d_model, float32, LeCun-scaled weights."""
    return [
        (Tensor((rng.standard_normal((d_model, d_model)) / np.sqrt(d_model))
                .astype(np.float32), requires_grad=True),
         Tensor(np.zeros(d_model, dtype=np.float32), requires_grad=True))
        for _ in range(depth)
    ]


def forward(params: list[tuple[Tensor, Tensor]], x: Tensor, y: Tensor) -> Tensor:
    h = x
    for w, b in params:
        h = (h @ w + b).tanh()  # (B, d_model) @ (d_model, d_model) -> (B, d_model)
    return ((h - y) ** 2).mean()


def _graph(root: Tensor) -> list[Any]:
    """The recorded graph (tensors), parents before children."""
    order: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
        elif id(t) not in seen:
            seen.add(id(t))
            stack.append((t, True))
            stack.extend((p, False) for p in t._parents if id(p) not in seen)
    return order


def liveness_backward(root: Tensor, live_at_start: int) -> list[int]:
    """Live activation bytes through an ideal backward pass that frees each interior
    tensor's array right after its own backward step (its consumers have all run by then)."""
    live, curve = live_at_start, []
    for t in reversed(_graph(root)):
        if t._parents and t.data.base is None:  # interior, owns its buffer
            live -= t.data.nbytes
            curve.append(live)
    return curve


def training_step(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    """The timeline of the least-disturbed of ``config.repeats`` identical training steps
    (after one warm-up): on a shared machine a single step is often preempted for longer than
    it runs. Bytes are identical in every repeat; only the clock differs."""
    seed = int(rng.integers(1 << 31))
    runs = [_one_step(config, np.random.default_rng(seed)) for _ in range(config.repeats + 1)]
    return min(runs[1:], key=lambda r: r["forward_ms"] + r["backward_ms"])


def _one_step(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    params = make_mlp(config.d_model, config.depth, rng)
    x = Tensor(rng.standard_normal((config.batch, config.d_model)).astype(np.float32))
    y = Tensor(rng.standard_normal((config.batch, config.d_model)).astype(np.float32))
    meter = LiveBytes()
    with register_allocation_hook(meter):
        t0 = time.perf_counter()
        loss = forward(params, x, y)
        t1 = time.perf_counter()
        n_forward = len(meter.timeline)
        peak = meter.live
        ideal = liveness_backward(loss, meter.live)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        after_backward = meter.live
        n_backward = len(meter.timeline)
        del loss
    # event times in ms on one clock that skips the (unmeasured) liveness analysis
    ms = [1e3 * (t - t0 if t <= t1 else t - t0 - (t2 - t1)) for t in meter.times]
    return {
        "timeline": meter.timeline, "times_ms": ms, "forward_ms": 1e3 * (t1 - t0),
        "backward_ms": 1e3 * (t3 - t2),
        "frees_inside_backward": n_backward - n_forward,
        "n_forward_events": n_forward, "peak": peak,
        "after_backward": after_backward, "ideal_backward": ideal,
        "grad_bytes": int(sum(p.grad.nbytes for pair in params for p in pair)),
        "param_bytes": int(sum(p.data.nbytes for pair in params for p in pair)),
    }


def peak_activations(d_model: int, depth: int, batch: int, rng: np.random.Generator,
                     grad: bool) -> int:
    """Peak live bytes of Tensors created by one forward pass (+ loss), with or without grad."""
    params = make_mlp(d_model, depth, rng)
    x = Tensor(rng.standard_normal((batch, d_model)).astype(np.float32))
    y = Tensor(rng.standard_normal((batch, d_model)).astype(np.float32))
    meter = LiveBytes()
    with register_allocation_hook(meter):
        if grad:
            loss = forward(params, x, y)
        else:
            with no_grad():
                loss = forward(params, x, y)
        del loss
    return max(meter.timeline)


def _fit(xs: list[int], ys: list[int]) -> dict[str, float]:
    b, a = np.polyfit(xs, ys, 1)
    pred = a + b * np.asarray(xs, dtype=float)
    ss_res = float(np.sum((np.asarray(ys) - pred) ** 2))
    ss_tot = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2))
    return {"intercept": float(a), "slope": float(b), "r2": 1 - ss_res / ss_tot}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    try:  # one BLAS thread: two threads on a shared two-core machine stall unpredictably
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            step = training_step(config, rng)
    except ImportError:  # pragma: no cover - threadpoolctl ships with the test extra
        step = training_step(config, rng)
    by_depth = {mode: [peak_activations(config.d_model, d, config.batch, rng, mode == "train")
                       for d in config.depths] for mode in ("train", "no_grad")}
    by_width = {mode: [peak_activations(w, config.depth, config.batch, rng, mode == "train")
                       for w in config.widths] for mode in ("train", "no_grad")}
    layer_bytes = config.batch * config.d_model * 4  # one (B, d_model) float32 array
    fit = _fit(list(config.depths), by_depth["train"])
    rows = [[d, round(t / 2**20, 3), round(n / 2**20, 3)]
            for d, t, n in zip(config.depths, by_depth["train"], by_depth["no_grad"])]
    return {
        "step": step,
        "depths": list(config.depths), "widths": list(config.widths),
        "peak_by_depth": by_depth, "peak_by_width": by_width,
        "depth_fit": fit,
        "arrays_per_layer": fit["slope"] / layer_bytes,  # k in depth × k·B·d_model
        "peak_mib": step["peak"] / 2**20,
        "param_mib": step["param_bytes"] / 2**20,
        "train_over_inference_at_max_depth": by_depth["train"][-1] / by_depth["no_grad"][-1],
        "table": {"columns": ["depth", "training peak (MiB)", "no_grad peak (MiB)"],
                  "rows": rows},
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    step = results["step"]
    mib = 2.0**20
    fig, ax = new_figure(width=6.4, height=3.4)
    t = np.asarray(step["timeline"]) / mib
    ms = np.asarray(step["times_ms"])
    nf = step["n_forward_events"]
    t_back, t_end = step["forward_ms"], step["forward_ms"] + step["backward_ms"]
    xs = np.r_[0.0, ms, t_end * 1.04]
    ys = np.r_[0.0, t, t[-1]]
    ax.step(xs, ys, where="post", color=PALETTE[0])
    ax.annotate("measured by the hook:\neach array freed after its backward step",
                xy=(t_end, t[nf - 1] * 0.9), xytext=(-6, 0), textcoords="offset points",
                ha="right", va="top", fontsize=8, color=PALETTE[0])
    ideal = np.r_[t[nf - 1], np.asarray(step["ideal_backward"]) / mib]
    # drawn against the measured backward events' times, so the two curves compare step by step
    xi = np.r_[t_back, ms[nf:]][: len(ideal)]
    ax.step(xi, ideal, where="post", color=PALETTE[1], ls="--")
    ax.annotate("liveness analysis (the ideal)",
                xy=(xi[len(xi) // 2], ideal[len(ideal) // 2]), xytext=(8, 10),
                textcoords="offset points", ha="left", fontsize=8, color=PALETTE[1])
    ax.axvspan(t_back, t_end, color="#eeeeee", zorder=0)
    ax.text(t_back / 2, t.max() * 1.04, "forward", ha="center", fontsize=8, color="#555555")
    ax.text((t_back + t_end) / 2, t.max() * 1.04, "backward", ha="center", fontsize=8,
            color="#555555")
    ax.set_xlabel("time within one training step (ms)")
    ax.set_ylabel("live activation memory (MiB)")
    ax.set_ylim(0, t.max() * 1.12)

    fig2, axes = new_figure(1, 2, width=7.2, height=3.0)
    for ax2, key, xkey, label in ((axes[0], "peak_by_depth", "depths", "depth (layers)"),
                                  (axes[1], "peak_by_width", "widths", "width d_model")):
        xs2 = results[xkey]
        for mode, color in (("train", PALETTE[0]), ("no_grad", PALETTE[2])):
            ys = np.asarray(results[key][mode]) / mib
            ax2.plot(xs2, ys, "o-", color=color, ms=3)
            direct_label(ax2, xs2, list(ys), "training" if mode == "train" else "no_grad",
                         color=color)
        ax2.set_xlabel(label)
        ax2.set_ylim(bottom=0)
    axes[0].set_ylabel("peak activation memory (MiB)")
    return {"memory_timeline": fig, "memory_scaling": fig2}


def check(results: dict[str, Any]) -> None:
    step = results["step"]
    # activations pile up during the forward pass: the peak is at the start of backward
    assert step["peak"] == max(step["timeline"])
    assert step["timeline"].index(step["peak"]) == step["n_forward_events"] - 1
    # everything the graph held is released by the end of the step, inside backward()
    assert step["after_backward"] <= step["peak"] / 100
    assert step["frees_inside_backward"] >= step["n_forward_events"] - 1
    # ... and released as it goes: at every free of the backward sweep the engine holds no more
    # than the liveness analysis allows (a few bytes of slack for the scalar loss)
    nf = step["n_forward_events"]
    measured, ideal = step["timeline"][nf:], step["ideal_backward"]
    assert len(measured) == len(ideal)
    assert all(m <= i + 16 for m, i in zip(measured, ideal))
    # training memory grows linearly with depth (O(depth × width)), k arrays per layer...
    fit = results["depth_fit"]
    assert fit["r2"] > 0.999 and 2.5 <= results["arrays_per_layer"] <= 4.5
    # ... while inference under no_grad holds a constant few arrays, whatever the depth
    inf = results["peak_by_depth"]["no_grad"]
    assert max(inf) == min(inf)
    # and in width both are linear: doubling d_model doubles the peak (B fixed)
    w = results["peak_by_width"]["train"]
    assert all(abs(b / a - 2.0) < 0.1 for a, b in zip(w, w[1:]))


EXPERIMENT = Experiment(
    name="autodiff_memory", stage=2, title="Memory timeline of one MLP training step",
    quick=Config(batch=16, d_model=64, depth=3, depths=(1, 2, 4), widths=(32, 64, 128)),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("peak activations (MiB)", round(r["peak_mib"], 3)),
                       ("arrays kept per layer", round(r["arrays_per_layer"], 2)),
                       ("training / no_grad peak at max depth",
                        round(r["train_over_inference_at_max_depth"], 1))],
)
