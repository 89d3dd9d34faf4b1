"""Keeping what torch keeps: our training step's peak with the lean saving policy, beside torch.

Stage 11 (``memory_torch``) measured our step's peak well above torch's on the same batch
and derived the gap per layer: the norms keep x̂, GELU keeps Φ(x), attention keeps P,
forward outputs no backward reads stay alive, and the head merge is a copy. Stage 12's
``GPTConfig(saved="lean")`` (:mod:`spiral.nn.lean`) removes each term while computing the
same bits, and ``attention="flash"`` keeps the log-sum-exp instead of P. For each model
shape (stage 11's baby comparison and the ``small`` preset's shapes at a batch that runs in
seconds) one AdamW step is profiled four ways, tag by tag at each peak:

    default (saved="all", naive attention) | flash only | lean + flash | torch (same batch)

and the saving lean adds to flash at the end of the forward pass is compared with
:func:`spiral.nn.lean.lean_saving`, term by term (it must match to the byte). torch's twin
of the GPT (``benchmarks/torch_gpt.py``) has no dropout, so every model here runs without
it (the ``small`` preset's 0.2 is set to 0 for all four). Lean's fused nodes report their
internal scratch (recomputed x̂ and Φ, intermediate gradients) to the profiler, so the
comparison does not flatter them. Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.memory.common import MiB, batch
from spiral.experiments.memory.torch_compare import _torch_model
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn.lean import lean_saving
from spiral.optim import AdamW
from spiral.plotting import PALETTE, new_figure
from spiral.profiling.memory import profile_step, torch_step_peak

# (label, GPTConfig overrides)
VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("default", {}), ("flash", {"attention": "flash"}),
    ("lean + flash", {"attention": "flash", "saved": "lean"}))
TAGS = ("param", "optimizer_state", "input", "grad", "activation", "temporary",
        "autograd_detail")


@dataclass(frozen=True)
class Config:
    # (preset, batch, context): stage 11's baby comparison and the small preset's shapes
    cases: tuple[tuple[str, int, int], ...] = (("baby", 8, 64), ("small", 4, 256))
    vocab_size: int = 65
    claim: bool = True  # the full variant claims lean + flash at or below torch


def _case(preset: str, B: int, T: int, vocab: int, seed: int) -> dict[str, Any]:
    import torch

    base = GPTConfig.preset(preset, vocab, dropout=0.0)
    x, y = batch(base, B, T, seed)
    tm = _torch_model(base, seed)
    theirs = torch_step_peak(tm, x, y, torch.optim.AdamW(tm.parameters(), lr=1e-3))
    del tm
    ours: dict[str, Any] = {}
    for label, kw in VARIANTS:
        c = GPTConfig.preset(preset, vocab, dropout=0.0, **kw)
        model = GPT(c, rng=np.random.default_rng(seed))
        tl = profile_step(model, (x, y), AdamW(model.parameters(), lr=1e-3))
        fwd = [e.live for e in tl.events if e.phase == "forward"][-1] - tl.baseline
        ours[label] = {"peak": tl.peak, "by_tag": tl.peak_by_tag, "op": tl.peak_op,
                       "phase": tl.peak_phase, "forward_end": fwd}
        del model, tl
    flash_c = GPTConfig.preset(preset, vocab, dropout=0.0, attention="flash")
    derived = lean_saving(flash_c, B, T)
    measured = ours["flash"]["forward_end"] - ours["lean + flash"]["forward_end"]
    lean_peak = ours["lean + flash"]["peak"]
    return {"preset": preset, "B": B, "T": T, "ours": ours, "torch": theirs,
            "derived_saving": derived, "derived_total": sum(derived.values()),
            "measured_saving": measured,
            "lean_over_torch": lean_peak / theirs["peak"],
            "default_over_torch": ours["default"]["peak"] / theirs["peak"],
            "at_or_below_torch": bool(lean_peak <= theirs["peak"])}


def _mib(v: int) -> str:
    return f"{v / MiB:.2f}"


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(1 << 30))
    cases = [_case(p, B, T, config.vocab_size, seed) for p, B, T in config.cases]
    labels = [v[0] for v in VARIANTS]
    rows: list[list[str]] = []
    for cs in cases:
        name = f"{cs['preset']} B={cs['B']} T={cs['T']}"
        tb = cs["torch"]["peak_by_tag"]
        for tag in TAGS:
            ob = [cs["ours"][lab]["by_tag"].get(tag, 0) for lab in labels]
            if not any(ob) and not tb.get(tag, 0):
                continue
            rows.append([name, tag, *[_mib(b) for b in ob], _mib(tb.get(tag, 0))])
        rows.append([name, "peak", *[_mib(cs["ours"][lab]["peak"]) for lab in labels],
                     _mib(cs["torch"]["peak"])])
    saving_rows = [[f"{cs['preset']} B={cs['B']} T={cs['T']}", k, _mib(v)]
                   for cs in cases for k, v in cs["derived_saving"].items()]
    saving_rows += [[f"{cs['preset']} B={cs['B']} T={cs['T']}", "derived total / measured",
                     f"{_mib(cs['derived_total'])} / {_mib(cs['measured_saving'])}"]
                    for cs in cases]
    by = {cs["preset"]: cs for cs in cases}
    return {"cases": cases, "claim": config.claim,
            "all_at_or_below_torch": all(cs["at_or_below_torch"] for cs in cases),
            "peaks": {p: {"default": cs["ours"]["default"]["peak"] / MiB,  # MiB
                          "flash": cs["ours"]["flash"]["peak"] / MiB,
                          "lean_flash": cs["ours"]["lean + flash"]["peak"] / MiB,
                          "torch": cs["torch"]["peak"] / MiB,
                          "lean_over_torch": cs["lean_over_torch"],
                          "default_over_torch": cs["default_over_torch"],
                          "lean_saving": cs["measured_saving"] / MiB,
                          "B": cs["B"], "T": cs["T"]}
                      for p, cs in by.items()},
            "table": {"columns": ["model, batch", "tag at the peak", "default (MiB)",
                                  "flash (MiB)", "lean + flash (MiB)", "torch (MiB)"],
                      "rows": rows},
            "saving_table": {"columns": ["model, batch", "what lean stops keeping",
                                         "MiB at the end of the forward pass"],
                             "rows": saving_rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    cases = results["cases"]
    fig, axes = new_figure(1, len(cases), width=3.6 * len(cases) + 1.8, height=3.0)
    axes = np.atleast_1d(axes)
    labels = [v[0] for v in VARIANTS] + ["torch"]
    for ax, cs in zip(axes, cases):
        bottom = np.zeros(len(labels))
        for k, tag in enumerate(TAGS):
            vals = np.array([cs["ours"][lab]["by_tag"].get(tag, 0) for lab in labels[:-1]]
                            + [cs["torch"]["peak_by_tag"].get(tag, 0)]) / MiB
            ax.bar(labels, vals, bottom=bottom, color=PALETTE[k % len(PALETTE)], label=tag)
            bottom += vals
        ax.axhline(cs["torch"]["peak"] / MiB, color="0.3", lw=0.8, ls="--",
                   label="torch's peak")
        ax.set_ylim(0, 1.08 * bottom.max())
        ax.set_title(f"{cs['preset']}: B={cs['B']}, T={cs['T']}", fontsize=9)
        ax.set_ylabel("bytes at the step's peak (MiB)")
        ax.tick_params(axis="x", labelsize=7)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return {"lean_vs_torch": fig}


def check(results: dict[str, Any]) -> None:
    for cs in results["cases"]:
        o, t = cs["ours"], cs["torch"]["peak_by_tag"]
        # lean adds to flash exactly the derived saving, to the byte
        assert cs["measured_saving"] == cs["derived_total"], cs["preset"]
        assert o["lean + flash"]["peak"] < o["flash"]["peak"] <= o["default"]["peak"]
        for lab in o:  # same parameters and Adam moments as torch (+ its step counters)
            assert o[lab]["by_tag"]["param"] == t["param"]
    if results["claim"]:
        assert results["all_at_or_below_torch"], results["peaks"]


EXPERIMENT = Experiment(
    name="memopt_lean", stage=12, title="Lean saving + flash attention beside torch's peak",
    quick=Config(cases=(("baby", 2, 32),), claim=False), full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"{p} peak: lean+flash / torch", round(v["lean_over_torch"], 3))
                       for p, v in r["peaks"].items()],
)
