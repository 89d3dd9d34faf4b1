"""The transformer block's information flow, drawn from a real ``Block``, pre-LN and post-LN.

Every box carries the parameter count and the forward matmul FLOPs per token of the module
it stands for, read off an instantiated :class:`spiral.nn.transformer.Block` of the baby
preset; the residual stream (the identity path) is drawn as one thick line. In pre-LN the
stream runs from the embedding to the final norm touched only by additions; in post-LN each
addition is followed by a norm ON the stream. Chapter: stage 8, "The block".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.patches import FancyBboxPatch

from spiral.experiments.framework import Experiment
from spiral.models.gpt import GPTConfig, count_parameters
from spiral.nn.transformer import Block
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    preset: str = "baby"
    vocab_size: int = 65


def _n(module: Any) -> int:
    return int(module.num_parameters()) if module is not None else 0


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = GPTConfig.preset(config.preset, config.vocab_size)
    blk = Block(c.d_model, c.n_heads, expansion=c.expansion, bias=c.bias, rng=rng)
    C, T, hidden = c.d_model, c.context_length, blk.ffn.fc.out_features if blk.ffn else 0
    parts = {
        "LN₁": _n(blk.ln1), "QKV projection": _n(blk.attn.qkv_proj),
        "attention (softmax QKᵀ/√d · V)": 0, "output projection": _n(blk.attn.out_proj),
        "LN₂": _n(blk.ln2), "FFN W₁ + GELU": _n(blk.ffn.fc) if blk.ffn else 0,
        "FFN W₂": _n(blk.ffn.proj) if blk.ffn else 0,
    }
    flops = {  # forward multiply-adds × 2 per token (attention: the average causal row)
        "QKV projection": 2 * 3 * C * C, "output projection": 2 * C * C,
        "attention (softmax QKᵀ/√d · V)": 2 * 2 * C * (T + 1) / 2,
        "FFN W₁ + GELU": 2 * C * hidden, "FFN W₂": 2 * hidden * C,
    }
    n_block = _n(blk)
    return {"preset": config.preset, "d_model": C, "n_heads": c.n_heads, "hidden": hidden,
            "context_length": T, "parts": parts, "flops_per_token": flops,
            "block_params": n_block, "parts_sum": sum(parts.values()),
            "model_params": count_parameters(c), "n_layers": c.n_layers,
            "blocks_share": c.n_layers * n_block / count_parameters(c),
            "ffn_share_of_block": (parts["FFN W₁ + GELU"] + parts["FFN W₂"]) / n_block}


def _box(ax: Any, x: float, y: float, text: str, color: str, w: float = 2.6) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - 0.32), w, 0.64,
                                boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=color, ec="#333333", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=7)


def _column(ax: Any, x0: float, results: dict[str, Any], pre: bool) -> None:
    p, f = results["parts"], results["flops_per_token"]

    def label(name: str) -> str:
        extra = f"{p[name]:,} params" if p[name] else "no params"
        if name in f:
            extra += f", {f[name] / 1e3:.0f}k FLOP/tok"
        return f"{name}\n{extra}"

    stream = PALETTE[1]
    ys = np.arange(10, 0, -1.0)
    ax.plot([x0 - 1.9, x0 - 1.9], [ys[0] + 0.6, ys[-1] - 0.6], color=stream, lw=4, alpha=0.5,
            solid_capstyle="round")
    ax.text(x0 - 2.05, ys[0] + 0.75, "residual stream x (B, T, d_model)", fontsize=7,
            color=stream, ha="left")
    norm_c, attn_c, ffn_c = "#e8e8e8", "#dbe8f5", "#f8e3cf"
    order = (["LN₁", "QKV projection", "attention (softmax QKᵀ/√d · V)", "output projection",
              "+", "LN₂", "FFN W₁ + GELU", "FFN W₂", "+"] if pre else
             ["QKV projection", "attention (softmax QKᵀ/√d · V)", "output projection", "+",
              "LN₁", "FFN W₁ + GELU", "FFN W₂", "+", "LN₂"])
    for y, name in zip(ys[:len(order)], order, strict=False):
        if name == "+":
            ax.add_patch(FancyBboxPatch((x0 - 1.9 - 0.2, y - 0.2), 0.4, 0.4,
                                        boxstyle="circle,pad=0", fc="white", ec=stream, lw=1.5))
            ax.text(x0 - 1.9, y, "+", ha="center", va="center", fontsize=10, color=stream)
            ax.annotate("", (x0 - 1.65, y), (x0 - 0.2, y + 0.6),
                        arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.8})
            continue
        color = norm_c if name.startswith("LN") else attn_c if y > ys[4] or (
            not pre and y > ys[3]) else ffn_c
        on_stream = not pre and name.startswith("LN")
        if name in (("LN₁", "LN₂") if pre else ("QKV projection", "FFN W₁ + GELU")):
            ax.annotate("", (x0 - 1.1, y), (x0 - 1.9, y + 0.6),  # the branch reads the stream
                        arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.8})
        _box(ax, x0 - 1.9 if on_stream else x0 + 0.2, y, label(name), color,
             w=1.2 if on_stream else 2.6)
    ax.text(x0, ys[0] + 1.4, "pre-LN (GPT-2, default)" if pre else "post-LN (2017 original)",
            ha="center", fontsize=9, weight="bold")


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=8.0, height=6.4)
    _column(ax, 0.0, results, pre=True)
    _column(ax, 5.6, results, pre=False)
    ax.set_xlim(-2.6, 7.4)
    ax.set_ylim(0.2, 11.8)
    ax.axis("off")
    ax.set_title(f"One block of the {results['preset']} GPT: d_model {results['d_model']}, "
                 f"{results['n_heads']} heads, FFN {results['hidden']} wide — "
                 f"{results['block_params']:,} parameters", fontsize=9)
    return {"block_diagram": fig}


def check(results: dict[str, Any]) -> None:
    """The boxes account for every parameter of the block; the FFN holds two thirds of it."""
    assert results["parts_sum"] == results["block_params"]
    assert abs(results["ffn_share_of_block"] - 2 / 3) < 0.01


EXPERIMENT = Experiment(
    name="transformer_block_diagram", stage=8, title="The block's information flow",
    quick=Config(), full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("block params", r["block_params"])],
)
