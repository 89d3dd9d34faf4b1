"""The online-softmax recurrence, block by block, on one row of attention scores.

One query row of a causal attention over T keys, processed in key blocks of size B as the
flash kernel does: after block j the running max m_j, the running normaliser ℓ_j (a sum of
exponentials shifted by m_j) and the running output O_j = A_j / ℓ_j. Whenever a block holds a
new maximum, everything summed so far is rescaled by e^{m_{j-1} - m_j}; after the last block
m, ℓ and O equal the two-pass softmax's max, sum and output up to rounding. The row's scores
come from a real query and real keys of a trained model's first attention head.
Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.nn.flash import flash_forward
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    T: int = 256
    block: int = 32
    base: str = "spiral-book"
    standin_steps: int = 60


def _model(config: Config, folder: str) -> tuple[Any, str]:
    from spiral.models.pretrained import load_pretrained, train_tiny_standin

    if config.base == "(stand-in)":  # the quick variant: a stand-in trained in seconds
        return train_tiny_standin(folder, steps=config.standin_steps), "tiny stand-in"
    return load_pretrained(config.base), config.base


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.data import get_splits

    with tempfile.TemporaryDirectory() as folder:
        pre, which = _model(config, folder)
        model = pre.model
        T = min(config.T, model.config.context_length)
        text = get_splits("shakespeare").val
        ids = np.array(pre.tokenizer.encode(text[:4 * T]), dtype=np.int64)[None, :T]
        blk = model.blocks[0]
        x = blk.ln1(model._embed(ids))
        q, k, v = blk.attn.split_heads(x)
        if blk.attn.rotary is not None:
            q, k = blk.attn.rotary(q, k)
    B = config.block if T >= 4 * config.block else max(1, T // 8)  # ≥ 4 blocks in the row
    qi = q.data[0, 0, T - 1][None, None].astype(np.float64)  # the last query sees all keys
    kk = k.data[0, 0, :T][None].astype(np.float64)
    vv = v.data[0, 0, :T][None].astype(np.float64)
    scale = 1 / np.sqrt(qi.shape[-1])
    trace: list[dict[str, np.ndarray]] = []
    out, lse = flash_forward(qi, kk, vv, scale, block_q=1, block_k=B, trace=trace)
    s = (qi[0] @ kk[0].T * scale)[0]
    m2 = s.max()
    ell2 = np.exp(s - m2).sum()
    o2 = (np.exp(s - m2) / ell2) @ vv[0]
    steps = [{"block": j, "m": float(t["m"].item()), "l": float(t["l"].item()),
              "o_err": float(np.abs(t["o"][0, 0] - o2).max())} for j, t in enumerate(trace)]
    return {"model": which, "scores": s.tolist(), "block": B, "steps": steps,
            "two_pass": {"m": float(m2), "l": float(ell2)},
            "final_max_error": float(np.abs(out[0, 0] - o2).max()),
            "lse_error": float(abs(lse.item() - (m2 + np.log(ell2)))),
            "rescales": sum(1 for a, b in zip(steps, steps[1:]) if b["m"] > a["m"])}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, (ax, bx) = new_figure(1, 2, width=10.0, height=3.2)
    s = np.array(results["scores"])
    B = results["block"]
    ax.plot(np.arange(len(s)), s, ".", ms=3, color=PALETTE[6], label="scores s_j")
    ends = [min(len(s), (st["block"] + 1) * B) - 1 for st in results["steps"]]
    ax.step(ends, [st["m"] for st in results["steps"]], where="post", color=PALETTE[1],
            label="running max m after each block")
    for e in ends:
        ax.axvline(e + 0.5, color=PALETTE[6], lw=0.3)
    ax.set_xlabel("key position")
    ax.set_ylabel("score")
    ax.legend(frameon=False, fontsize=8)
    errs = [max(st["o_err"], 1e-17) for st in results["steps"]]
    bx.semilogy([st["block"] + 1 for st in results["steps"]], errs, "o-", color=PALETTE[0])
    bx.set_xlabel(f"key blocks processed (B = {B})")
    bx.set_ylabel("max |O_j − O| (two-pass O)")
    return {"online_softmax": fig}


def check(results: dict[str, Any]) -> None:
    assert results["final_max_error"] < 1e-13
    assert results["lse_error"] < 1e-12
    assert results["steps"][-1]["m"] == results["two_pass"]["m"]
    assert results["steps"][0]["o_err"] > 1e-6  # the partial outputs really differ


EXPERIMENT = Experiment(
    name="memopt_online_softmax", stage=12, title="The online softmax, step by step",
    quick=Config(base="(stand-in)", standin_steps=10, T=64, block=8),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("final error", r["final_max_error"]), ("rescales", r["rescales"])],
)
