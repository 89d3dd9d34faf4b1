"""KV-cache bytes per token against the number of key/value heads: predicted = measured.

Generating token t+1 re-reads the keys and values of all t earlier tokens, so an inference
engine keeps them: per token, every layer stores K and V for each of its Hkv kv heads,

    bytes/token = 2 · L · Hkv · hd · bytes per number                   (float32: 4)

Grouped-query attention (Ainslie et al., 2023) shrinks it H/Hkv-fold; Hkv = 1 is multi-query
attention (Shazeer, 2019). "Measured" is the size of the K and V arrays our model computes
for a T-token prompt, divided by T; the parameter count shrinks by 2·C·hd per removed kv head
and layer. The validation-loss cost of fewer kv heads needs trained models: it belongs to the
chapter's training runs, not to this count. Chapter: stage 14, "MHA, MQA, GQA".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.models.gpt import GPT, GPTConfig, count_parameters
from spiral.nn.transformer import Block
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    preset: str = "llama-baby"
    vocab_size: int = 65
    n_heads: int = 8
    n_kv_heads: tuple[int, ...] = (1, 2, 4, 8)
    prompt_tokens: int = 64


def _measured(model: GPT, n_tokens: int) -> int:
    """Bytes of the K and V arrays of every layer for one prompt of n_tokens."""
    x = model.tok_emb(np.zeros((1, n_tokens), np.int64))
    total = 0
    for blk in model.blocks:
        assert isinstance(blk, Block)
        _, k, v = blk.attn.split_heads(x)  # K and V before the rotation; same size after
        total += k.data.nbytes + v.data.nbytes
    return total


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    rows = []
    for n_kv in config.n_kv_heads:
        c = GPTConfig.preset(config.preset, config.vocab_size, n_heads=config.n_heads,
                             n_kv_heads=n_kv)
        m = GPT(c, rng=rng)
        rows.append({"n_kv_heads": n_kv, "predicted_bytes_per_token":
                     c.kv_cache_bytes_per_token(itemsize=4),
                     "measured_bytes_per_token": _measured(m, config.prompt_tokens)
                     / config.prompt_tokens,
                     "params": count_parameters(c), "head_dim": c.head_dim,
                     "n_layers": c.n_layers})
    mha = rows[-1]
    for r in rows:
        r["cache_ratio_to_mha"] = r["predicted_bytes_per_token"] / mha["predicted_bytes_per_token"]
        r["params_saved"] = mha["params"] - r["params"]
    H = config.n_heads
    table = {"columns": ["KV heads", "kind", "predicted bytes/token", "measured bytes/token",
                         "cache ÷ MHA's", "parameters"],
             "rows": [[str(r["n_kv_heads"]),
                       "MQA" if r["n_kv_heads"] == 1 else "MHA" if r["n_kv_heads"] == H
                       else "GQA", f"{r['predicted_bytes_per_token']:,}",
                       f"{r['measured_bytes_per_token']:,.0f}",
                       f"{r['cache_ratio_to_mha']:.3f}", f"{r['params']:,}"] for r in rows]}
    return {"rows": rows, "n_heads": config.n_heads, "preset": config.preset,
            "context_length": GPTConfig.preset(config.preset, config.vocab_size).context_length,
            "table": table}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["rows"]
    fig, ax = new_figure(width=5.6, height=3.4)
    kv = [r["n_kv_heads"] for r in rows]
    ax.plot(kv, [r["predicted_bytes_per_token"] / 1024 for r in rows], "-", color=PALETTE[6],
            lw=1, label="predicted 2·L·Hkv·hd·4 bytes")
    ax.plot(kv, [r["measured_bytes_per_token"] / 1024 for r in rows], "o", color=PALETTE[0],
            label="measured (K and V arrays)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)  # log-log: a line of slope 1 is "proportional to Hkv"
    kib = [r["predicted_bytes_per_token"] / 1024 for r in rows]
    ax.set_yticks(kib, [f"{v:g}" for v in kib])
    ax.set_xticks(kv, [f"{k}\n{'MQA' if k == 1 else 'MHA' if k == results['n_heads'] else 'GQA'}"
                       for k in kv])
    ax.set_xlabel(f"key/value heads (of {results['n_heads']} query heads)")
    ax.set_ylabel("KV cache, KiB per token")
    ax.legend(frameon=False, fontsize=7)
    return {"kv_cache_bytes": fig}


def check(results: dict[str, Any]) -> None:
    """Predicted = measured exactly; the cache is linear in Hkv; each kv head removed saves
    2·C·hd parameters per layer."""
    H = results["n_heads"]
    for r in results["rows"]:
        assert r["measured_bytes_per_token"] == r["predicted_bytes_per_token"]
        assert r["cache_ratio_to_mha"] == r["n_kv_heads"] / H
        assert r["params_saved"] == r["n_layers"] * 2 * (H * r["head_dim"]) * r["head_dim"] \
            * (H - r["n_kv_heads"])


EXPERIMENT = Experiment(
    name="architectures_kv_cache", stage=14, title="KV-cache bytes per token vs kv heads",
    quick=Config(prompt_tokens=16), full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(f"Hkv={x['n_kv_heads']} bytes/token", x["measured_bytes_per_token"])
                       for x in r["rows"]],
)
