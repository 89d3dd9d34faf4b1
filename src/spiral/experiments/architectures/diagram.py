"""GPT-2's block and Llama's block side by side, every box counted from a real model.

Both columns are read off instantiated models of the ``gpt2-baby`` and ``llama-baby``
presets (:mod:`spiral.models.gpt`): the norms (LayerNorm: C gains; RMSNorm: C gains and no
mean), attention (the fused QKV projection, (H + 2·Hkv)·hd rows; RoPE rotates q and k inside
it and has no parameters), the feed-forward sub-layer (GELU: 2·4C² weights; SwiGLU: 3·C·h at
the parameter-matched width) and the embeddings (a learned T × C position table on GPT-2's
side only). The check: the boxes add up to each model's parameter count, and the two counts
differ by less than half a SwiGLU width step. Chapter: stage 14, "Two blocks side by side".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.patches import FancyBboxPatch

from spiral.experiments.framework import Experiment
from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.nn.transformer import Block
from spiral.plotting import new_figure


@dataclass(frozen=True)
class Config:
    vocab_size: int = 65
    presets: tuple[str, str] = ("gpt2-baby", "llama-baby")


def _parts(model: GPT) -> dict[str, int]:
    """Parameters per box, summed over the layers."""
    c = model.config
    groups = {"token embedding (tied head)": model.tok_emb.num_parameters(),
              "position table": model.pos_emb.num_parameters() if model.pos_emb else 0,
              "norms (2 per block + final)": 0, "QKV projection": 0, "output projection": 0,
              "feed-forward": 0}
    for blk in model.blocks:
        assert isinstance(blk, Block)
        groups["norms (2 per block + final)"] += blk.ln1.num_parameters() + (
            blk.ln2.num_parameters() if blk.ln2 is not None else 0)
        groups["QKV projection"] += blk.attn.qkv_proj.num_parameters()
        groups["output projection"] += blk.attn.out_proj.num_parameters()
        groups["feed-forward"] += blk.ffn.num_parameters() if blk.ffn is not None else 0
    if model.final_norm is not None:
        groups["norms (2 per block + final)"] += model.final_norm.num_parameters()
    if not c.tie_weights and model.lm_head is not None:
        groups["untied head"] = model.lm_head.num_parameters()
    return groups


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {"models": {}}
    for name in config.presets:
        c = GPTConfig.preset(name, config.vocab_size)
        m = GPT(c, rng=rng)
        parts = _parts(m)
        out["models"][name] = {
            "parts": parts, "parts_sum": sum(parts.values()), "params": m.num_parameters(),
            "closed_form": count_parameters(c), "norm": c.norm_type, "ffn": c.ffn_type,
            "positional": c.positional, "hidden": c.hidden, "n_layers": c.n_layers,
            "d_model": c.d_model, "n_heads": c.n_heads, "n_kv_heads": c.kv_heads,
            "bias": c.bias, "context_length": c.context_length}
    a, b = (out["models"][n]["params"] for n in config.presets)
    out["param_difference"] = int(b - a)
    out["relative_difference"] = (b - a) / a
    out["book_flops"] = _book_flops()
    return out


def _book_flops() -> dict[str, Any]:
    """Training FLOPs per token of the book's model, split into weight matmuls and attention."""
    from spiral.experiments.architectures.book_model import Config as BookConfig
    from spiral.experiments.architectures.book_model import model_config
    from spiral.scaling.flops import attention_flops_per_token, matmul_parameters

    c = model_config(BookConfig())
    weights = 6 * matmul_parameters(c)           # 3 passes × 2 FLOPs per multiply-add
    attention = 3 * attention_flops_per_token(c)  # 3 × 4·L·T·H·hd
    return {"n_matmul": matmul_parameters(c), "weights": weights, "attention": attention,
            "per_token": weights + attention, "attention_share": attention / (weights + attention)}


_LABELS = {
    "layernorm": "LayerNorm (x − μ)/σ · γ", "rmsnorm": "RMSNorm x/rms(x) · γ",
    "gelu": "W₂ GELU(W₁x)", "swiglu": "W₂ (SiLU(W₁x) ⊙ W₃x)",
    "learned": "learned positions P[t] added", "rope_halves": "RoPE: rotates q, k inside attention",
}


def _box(ax: Any, x: float, y: float, text: str, color: str) -> None:
    ax.add_patch(FancyBboxPatch((x - 1.55, y - 0.36), 3.1, 0.72, fc=color, ec="#333333", lw=0.8,
                                boxstyle="round,pad=0.02,rounding_size=0.12"))
    ax.text(x, y, text, ha="center", va="center", fontsize=7)


def _column(ax: Any, x: float, name: str, m: dict[str, Any]) -> None:
    p, L = m["parts"], m["n_layers"]
    norm = _LABELS[m["norm"]]
    rows = [
        ("output: logits = x Eᵀ (tied)", 0, "#f2f2f2"),
        (f"final {m['norm']}", None, "#e8e8e8"),
        (f"{_LABELS[m['ffn']]}, h = {m['hidden']}\n{p['feed-forward'] // L:,} params/layer",
         None, "#f8e3cf"),
        (f"{norm}\n{m['d_model']} gains/norm", None, "#e8e8e8"),
        (f"attention: {m['n_heads']} q heads, {m['n_kv_heads']} kv heads\n"
         f"QKV {p['QKV projection'] // L:,} + out {p['output projection'] // L:,} /layer",
         None, "#dbe8f5"),
        (f"{norm}", None, "#e8e8e8"),
        (f"{_LABELS[m['positional']]}\n{p['position table']:,} params", None, "#e3f0da"),
        (f"token embedding E\n{p['token embedding (tied head)']:,} params", None, "#f2f2f2"),
    ]
    ys = np.linspace(9.2, 1.0, len(rows))
    ax.plot([x, x], [ys[-1], ys[0]], color="#c0504d", lw=3, alpha=0.35, zorder=0)
    for (text, _, color), y in zip(rows, ys, strict=True):
        _box(ax, x, y, text, color)
    ax.add_patch(FancyBboxPatch((x - 1.8, ys[5] - 0.55), 3.6, ys[2] - ys[5] + 1.1, fc="none",
                                ec="#7f7f7f", lw=0.8, ls="--",
                                boxstyle="round,pad=0.02,rounding_size=0.15"))
    ax.text(x + 1.85, (ys[2] + ys[5]) / 2, f"× {L}", fontsize=8, va="center")
    ax.text(x, 10.1, f"{name}: {m['params']:,} parameters", ha="center", fontsize=9,
            weight="bold")


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, ax = new_figure(width=8.0, height=6.0)
    for x, (name, m) in zip((0.0, 4.4), results["models"].items(), strict=True):
        _column(ax, x, name, m)
    ax.set_xlim(-2.0, 6.8)
    ax.set_ylim(0.3, 10.6)
    ax.axis("off")
    return {"blocks_side_by_side": fig}


def check(results: dict[str, Any]) -> None:
    """Every parameter is in a box; the two models are equal in size up to 3·C·L/2."""
    for m in results["models"].values():
        assert m["parts_sum"] == m["params"] == m["closed_form"]
    m = next(iter(results["models"].values()))
    assert abs(results["param_difference"]) <= 3 * m["d_model"] * m["n_layers"] / 2


EXPERIMENT = Experiment(
    name="architectures_diagram", stage=14, title="GPT-2's and Llama's blocks side by side",
    quick=Config(), full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("parameter difference", r["param_difference"])],
)
