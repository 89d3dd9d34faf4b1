"""All three together: the largest batch that fits a fixed memory budget, per combination.

For one GPT, one context length T and a budget M, each combination of checkpointing every
block (ck), flash attention (fa) and 16-bit mixed precision (mp) gets its largest batch

    B* = max { B : peak(B) ≤ M }

from stage 11's memory model extended by this chapter's three predictions, with no run at
all; then ONE training step at B* is measured with stage 11's profiler, beside the
prediction. The extensions, each a change of stage 11's graph or of its accounting:

* fa: each attention node keeps λ (B·H·T numbers) and a second copy of O (the kernel's own
  output array, saved for D = rowsum(dO ⊙ O)) instead of the B·H·T² probabilities;
* mp: every activation, weight and gradient is stored in 2 bytes; the optimizer keeps a
  float32 master copy and float32 moments (stage 11's ``mixed`` layout, 16 bytes per
  parameter). NumPy's bfloat16 matmul returns float32, so the measured step stores its
  16 bits as float16 — the same two bytes — under :class:`MasterAdamW` below;
* ck: the checkpointing formula of :mod:`spiral.experiments.memopt.checkpointing` with
  c = n segments, applied to the (fa, mp) graph's block sizes.

The peak is the one the profiler's hooks see (``peak_visible``): kernels' scratch arrays
inside one backward op are not in it. Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.models.gpt import GPT, GPTConfig
from spiral.optim import AdamW
from spiral.plotting import PALETTE, new_figure
from spiral.profiling.memory import (
    build_gpt_graph,
    layout_for,
    predict_training_memory,
    profile_step,
    simulate_step,
)
from spiral.profiling.memory_graph import Node

MiB = 2**20
# (name, checkpoint every block, flash attention, 16-bit mixed precision)
COMBOS = (("baseline", False, False, False), ("+ checkpointing", True, False, False),
          ("+ flash attention", False, True, False), ("+ 16-bit mixed", False, False, True),
          ("checkpointing + flash", True, True, False), ("all three", True, True, True))
SINGLE = ("+ checkpointing", "+ flash attention", "+ 16-bit mixed")


@dataclass(frozen=True)
class Config:
    n_layers: int = 4
    d_model: int = 32
    n_heads: int = 2
    vocab_size: int = 65
    T: int = 256
    budget_mib: float = 32.0
    max_batch: int = 4096


def _flash(n: Node, B: int, H: int, T: int, s: int) -> Node:
    """The attention node with flash attention's storage: λ (B·H·T) and the block's own
    T×T additive causal mask, no B·H·T² probabilities."""
    if not n.name.endswith(".attn.sdpa"):
        return n
    return replace(n, saved=B * H * T * s + T * T * s, scratch=0)


def predict(c: GPTConfig, B: int, T: int, ck: bool, fa: bool, mp: bool) -> int:
    """Predicted peak (hook-visible bytes) of one AdamW step of the combination."""
    lay = layout_for("adamw", "mixed" if mp else "fp32")
    s = lay.activation_bytes
    nodes = build_gpt_graph(c, B, T, itemsize=s)
    if fa:
        nodes = [_flash(n, B, c.n_heads, T, s) for n in nodes]
    P = sum(n.numel for n in nodes if n.param)
    biggest = max(n.numel for n in nodes if n.param)
    resident = P * (lay.param_bytes + lay.master_bytes + lay.state_bytes) + 2 * B * T * 8
    sim, _ = simulate_step(nodes, resident, lay.step_scratch * biggest)
    if not ck:
        return int(sim.best_visible[1])
    # checkpointing: while block K (0-based) is recomputed and backpropagated, the blocks
    # before it hold only their outputs x instead of all a bytes each, and the recomputed
    # block's output is a second x; the head and loss run when no block is expanded yet
    n = c.n_layers
    a = sum(m.out + m.saved for m in nodes if m.layer == "block0" and not m.param)
    x = B * T * c.d_model * s
    layer = {m.name: m.layer for m in nodes}
    peak = 0
    for phase, name, live in sim.timeline:
        where = layer.get(name, "")
        if phase == "forward":
            continue  # the plain forward's largest moment is its end: the loss node below
        if where.startswith("block"):
            live += 2 * x - int(where[5:]) * (a - x)
        elif where in ("head", "loss") or phase == "step" or name.startswith("loss"):
            live -= n * (a - x) if phase != "step" else 0
        peak = max(peak, live)
    return int(peak)


def largest_batch(c: GPTConfig, T: int, budget: int, ck: bool, fa: bool, mp: bool,
                  max_batch: int) -> int:
    """max {B ≤ max_batch : predict(B) ≤ budget} by stage 11's bisection (the peak grows
    with B); 0 if not even one sequence fits."""
    from spiral.profiling.memory_batch import largest_fitting

    return largest_fitting(lambda b: predict(c, b, T, ck, fa, mp) <= budget, 1, max_batch)


class MasterAdamW:
    """AdamW on float32 master weights for a model stored in 16 bits (Micikevicius et al.,
    2018): the step converts one gradient at a time to float32, updates the master copy
    and its moments, and rounds the result back into the model. Its ``state`` holds the
    master weights and both moments, so stage 11's profiler counts them (12 bytes each)."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        self.params = list(params)
        self.param_groups: list[dict[str, Any]] = [{"params": self.params, "lr": lr}]
        self.betas, self.eps, self.weight_decay, self.t = betas, eps, weight_decay, 0
        self.state = {i: {"master": p.data.astype(np.float32),
                          "exp_avg": np.zeros(p.data.shape, np.float32),
                          "exp_avg_sq": np.zeros(p.data.shape, np.float32)}
                      for i, p in enumerate(self.params)}

    def step(self) -> None:
        self.t += 1
        (b1, b2), lr = self.betas, self.param_groups[0]["lr"]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            st, g = self.state[i], p.grad.astype(np.float32)
            w, m, v = st["master"], st["exp_avg"], st["exp_avg_sq"]
            w *= 1 - lr * self.weight_decay
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            w -= lr / (1 - b1**self.t) * m / (np.sqrt(v / (1 - b2**self.t)) + self.eps)
            p.data[...] = w  # rounded into the 16-bit model

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None


def measure(c: GPTConfig, B: int, T: int, ck: bool, fa: bool, mp: bool, seed: int) -> int:
    """The profiler's peak of one steady-state training step at batch B."""
    cfg = replace(c, checkpoint="blocks" if ck else "none", attention="flash" if fa else "naive")
    model = GPT(cfg, rng=np.random.default_rng(seed), dtype=np.float16 if mp else np.float32)
    r = np.random.default_rng(seed + 1)
    batch = (r.integers(0, c.vocab_size, (B, T)), r.integers(0, c.vocab_size, (B, T)))
    with np.errstate(all="ignore"):  # float16 without a scale: values are not the point
        if mp:  # its state exists from the start: no warm-up step needed
            return profile_step(model, batch, MasterAdamW(model.parameters()), warmup=False).peak
        return profile_step(model, batch, AdamW(model.parameters(), lr=1e-3)).peak


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    T = config.T
    c = GPTConfig(vocab_size=config.vocab_size, context_length=T, n_layers=config.n_layers,
                  n_heads=config.n_heads, d_model=config.d_model)
    budget = int(config.budget_mib * MiB)
    rows: list[dict[str, Any]] = []
    for name, ck, fa, mp in COMBOS:
        b = largest_batch(c, T, budget, ck, fa, mp, config.max_batch)
        pred = predict(c, b, T, ck, fa, mp)
        meas = measure(c, b, T, ck, fa, mp, seed)
        rows.append({"name": name, "ck": ck, "fa": fa, "mp": mp, "batch": b, "tokens": b * T,
                     "predicted": pred, "measured": meas,
                     "predicted_next": predict(c, b + 1, T, ck, fa, mp),
                     "rel_error": (pred - meas) / meas, "fits": meas <= budget})
    base = rows[0]["batch"]
    for r in rows:
        r["gain"] = r["batch"] / base
        # peak ≈ R + B·u: u is one more sequence's bytes, R what does not grow with B
        r["per_sequence"] = r["predicted_next"] - r["predicted"]
        r["fixed"] = r["predicted"] - r["batch"] * r["per_sequence"]
    by = {r["name"]: r for r in rows}
    u = {n: r["per_sequence"] for n, r in by.items()}
    for r in rows:
        r["per_sequence_ratio"] = u["baseline"] / r["per_sequence"]
    product = float(np.prod([by[n]["gain"] for n in SINGLE]))
    table = {"columns": ["combination", "largest batch B*", "tokens per step",
                         "predicted peak (bytes)", "measured − predicted (bytes)",
                         "B* / baseline"],
             "rows": [[r["name"], f"{r['batch']:,}", f"{r['tokens']:,}",
                       f"{r['predicted']:,}", f"{r['measured'] - r['predicted']:+d}",
                       f"{r['gain']:.2f}×"] for r in rows]}
    return {"rows": rows, "table": table, "budget": budget, "budget_mib": config.budget_mib,
            "T": T,
            "n_layers": c.n_layers, "d_model": c.d_model, "n_heads": c.n_heads,
            "all_gain": rows[-1]["gain"], "product_of_gains": product,
            "per_sequence_product": float(np.prod([by[n]["per_sequence_ratio"] for n in SINGLE])),
            # flash attention's saving per sequence, alone and on top of checkpointing
            "flash_saving": u["baseline"] - u["+ flash attention"],
            "flash_saving_under_ck": u["+ checkpointing"] - u["checkpointing + flash"],
            "mixed_ratio": u["checkpointing + flash"] / u["all three"],
            "max_abs_rel_error": max(abs(r["rel_error"]) for r in rows),
            "max_abs_error_bytes": max(abs(r["predicted"] - r["measured"]) for r in rows),
            "all_fit": all(r["fits"] for r in rows),
            "plain_matches_stage11": predict(c, base, T, False, False, False)
            == predict_training_memory(c, base, T, "adamw").peak_visible,
            "loadavg": list(os.getloadavg())}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["rows"]
    fig, (ax, bx) = new_figure(1, 2, width=10.0, height=3.4)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["batch"] for r in rows], color=[PALETTE[6]] + [PALETTE[0]] * 3
            + [PALETTE[3], PALETTE[2]], height=0.6)
    for yi, r in zip(y, rows):
        ax.text(r["batch"], yi, f"  {r['batch']} ({r['gain']:.1f}×)", va="center", fontsize=8)
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.set_xlabel(f"largest batch B* at T = {results['T']} (predicted)")
    ax.set_xlim(0, 1.3 * max(r["batch"] for r in rows))
    budget = results["budget"] / MiB
    fixed = [r["fixed"] / MiB for r in rows]
    grows = [(r["predicted"] - r["fixed"]) / MiB for r in rows]
    bx.barh(y, fixed, height=0.6, color=PALETTE[6])
    bx.barh(y, grows, left=fixed, height=0.6, color=PALETTE[0])
    bx.plot([r["measured"] / MiB for r in rows], y, "|", color=PALETTE[1], ms=22, mew=2)
    bx.text(fixed[0] / 2, y[0], "R", ha="center", va="center", color="white", fontsize=8)
    bx.text(fixed[0] + grows[0] / 2, y[0], "B*·u (predicted)", ha="center", va="center",
            color="white", fontsize=8)
    bx.text(rows[0]["measured"] / MiB, y[0] + 0.45, "measured ", ha="right", fontsize=8,
            color=PALETTE[1])
    bx.axvline(budget, color=PALETTE[6], ls="--", lw=1)
    bx.text(budget, y[-1] - 0.6, f"budget {budget:.0f} MiB", ha="right", fontsize=8,
            color=PALETTE[6])
    bx.set_yticks(y, [""] * len(rows))
    bx.set_xlim(0, 1.08 * budget)
    bx.set_xlabel("peak of one training step at B* (MiB): fixed R + B*·u per sequence")
    return {"combined_budget": fig}


def check(results: dict[str, Any]) -> None:
    rows = {r["name"]: r for r in results["rows"]}
    assert results["plain_matches_stage11"]  # the extension starts from stage 11's model
    assert results["all_fit"]  # every measured step fits the budget ...
    assert all(r["predicted_next"] > results["budget"] for r in rows.values())  # ... B*+1 not
    # the extended model predicts the profiler's peak to within a few bytes
    assert results["max_abs_error_bytes"] <= 64, results["max_abs_error_bytes"]
    assert all(r["gain"] > 1 for n, r in rows.items() if n != "baseline")
    best_single = max(rows[n]["gain"] for n in SINGLE)
    assert results["all_gain"] > best_single * 1.5  # they compose ...
    # ... 16 bits halve every per-sequence byte but the int64 token ids, with or without
    # the others; flash attention on top of checkpointing saves ONE block's B·H·T² term,
    # not n, since checkpointing already dropped the others: so less than the product
    assert 1.95 < rows["+ 16-bit mixed"]["per_sequence_ratio"] <= 2.0
    assert 1.95 < results["mixed_ratio"] <= 2.0
    assert results["flash_saving_under_ck"] * results["n_layers"] == results["flash_saving"]
    assert rows["all three"]["per_sequence_ratio"] < results["per_sequence_product"]


EXPERIMENT = Experiment(
    name="memopt_combined", stage=12, title="All three: the largest batch under a budget",
    quick=Config(n_layers=2, d_model=16, n_heads=2, T=32, budget_mib=2.0, max_batch=512),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("baseline B*", r["rows"][0]["batch"]),
                       ("all three B*", r["rows"][-1]["batch"]),
                       ("gain", r["all_gain"]), ("max |rel error|", r["max_abs_rel_error"])],
)
