"""What the vocabulary size costs a transformer, from measured token counts.

For a decoder with ``n_layers`` blocks of width ``d_model`` reading a window of ``W`` bytes
that the tokenizer turns into ``n = W / c`` tokens (``c`` = measured bytes per token):

* embedding memory ``V * d_model`` parameters (and as many again for an untied output);
* output softmax: ``2 V d_model`` FLOPs per token, so ``2 V d_model / c`` per byte;
* the blocks' matrix products: ``24 n_layers d_model^2`` FLOPs per token (``12 d^2``
  weights per block, 2 FLOPs per multiply-add), so ``24 L d^2 / c`` per byte;
* attention scores and the weighted sum: ``4 n_layers n^2 d_model`` FLOPs per window --
  quadratic in ``n``, so halving the token count quarters it.

Bigger vocabularies shorten sequences (``c`` grows) but widen the softmax; the total per
byte has a minimum whose location grows with ``d_model * n_layers``. With the measured
compression fitted as ``c(V) = a + b ln V``, setting the derivative of the per-byte total
to zero gives ``V* = b L (12 d c + 4 W) / (c (c - b))`` at ``c = c(V*)`` (solved by
fixed-point iteration); the experiment stores both the fit's prediction and the sweep's
measured minimum. Also measured: how
many training occurrences each token gets (rare tokens get few gradient updates).

The trained-model half of this trade-off (bits per character of small GPTs at several
vocab sizes) is the experiment ``tokenization_vocab_training``.

Chapter: stage 10, "Tokenization" (section *What the vocabulary costs*).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.tokenization.compression import load_splits

#: (name, d_model, n_layers): nanoGPT's shakespeare-char model, and GPT-2 small.
MODELS = (("6x384 (nanoGPT char)", 384, 6), ("12x768 (GPT-2 small)", 768, 12))


@dataclass(frozen=True)
class Config:
    vocab_sizes: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
    window_bytes: int = 1024
    rare_below: int = 10  # a token seen fewer times than this in training is "rare"
    max_train_chars: int = 0
    max_val_chars: int = 0


def costs(bytes_per_token: float, vocab_size: int, d_model: int, n_layers: int,
          window_bytes: int) -> dict[str, float]:
    """FLOPs per byte of text (forward pass) split by where they are spent."""
    n = window_bytes / bytes_per_token  # tokens per window
    blocks = 24 * n_layers * d_model**2 * n
    attention = 4 * n_layers * n**2 * d_model
    softmax = 2 * vocab_size * d_model * n
    return {
        "tokens_per_window": n,
        "blocks_flops_per_byte": blocks / window_bytes,
        "attention_flops_per_byte": attention / window_bytes,
        "softmax_flops_per_byte": softmax / window_bytes,
        "total_flops_per_byte": (blocks + attention + softmax) / window_bytes,
        "embedding_params": float(vocab_size * d_model),
    }


def predicted_best_vocab(a: float, b: float, d_model: int, n_layers: int,
                         window_bytes: int) -> float:
    """Stationary point of FLOPs per byte when ``c(V) = a + b ln V`` (fixed-point iteration)."""
    v = 4096.0
    for _ in range(200):
        c = a + b * np.log(v)
        v = b * n_layers * (12 * d_model * c + 4 * window_bytes) / (c * (c - b))
    return float(v)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.tokenizers.bpe import BPETokenizer

    train, val = load_splits(config.max_train_chars, config.max_val_chars)
    val_bytes = len(val.encode("utf-8"))
    sweep = []
    for v in config.vocab_sizes:
        tok = BPETokenizer().train(train, v)
        train_ids = tok.encode(train)
        c = val_bytes / len(tok.encode(val))
        seen = Counter(train_ids)
        rare = sum(1 for i in range(tok.vocab_size) if seen[i] < config.rare_below)
        entry: dict[str, Any] = {
            "vocab_size": tok.vocab_size, "bytes_per_token": c,
            "rare_tokens": rare, "rare_fraction": rare / tok.vocab_size,
            "median_train_count": float(np.median([seen[i] for i in range(tok.vocab_size)])),
            "models": {},
        }
        for name, d, n_layers in MODELS:
            entry["models"][name] = costs(c, tok.vocab_size, d, n_layers, config.window_bytes)
        sweep.append(entry)
    best = {}
    for name, _, _ in MODELS:
        totals = [e["models"][name]["total_flops_per_byte"] for e in sweep]
        best[name] = sweep[int(np.argmin(totals))]["vocab_size"]
    # Least-squares fit of the measured compression, c(V) = a + b ln V.
    b_fit, a_fit = np.polyfit(np.log([e["vocab_size"] for e in sweep]),
                              [e["bytes_per_token"] for e in sweep], 1)
    predicted = {name: predicted_best_vocab(a_fit, b_fit, d, n_layers, config.window_bytes)
                 for name, d, n_layers in MODELS}
    small = MODELS[0][0]
    rows = []
    for e in sweep:
        m = e["models"][small]
        rows.append([
            e["vocab_size"], f"{e['bytes_per_token']:.2f}", f"{m['tokens_per_window']:.0f}",
            f"{m['embedding_params'] * 4 / 2**20:.1f}",
            f"{m['softmax_flops_per_byte'] / 1e6:.2f}",
            f"{m['attention_flops_per_byte'] / 1e6:.2f}",
            f"{m['total_flops_per_byte'] / 1e6:.2f}",
            f"{e['rare_tokens']} ({100 * e['rare_fraction']:.0f} %)",
        ])
    return {
        "sweep": sweep,
        "by_vocab": {str(e["vocab_size"]): e for e in sweep},
        "best_vocab": best,
        "fit": {"a": float(a_fit), "b": float(b_fit)},
        "predicted_best_vocab": predicted,
        "table": {
            "columns": ["vocab size", "bytes/token", f"tokens per {config.window_bytes} B",
                        "embedding MiB (fp32)", "softmax MFLOP/byte", "attention MFLOP/byte",
                        "total MFLOP/byte", f"tokens seen < {config.rare_below}×"],
            "rows": rows,
        },
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    sweep = results["sweep"]
    v = [e["vocab_size"] for e in sweep]
    fig, axes = new_figure(1, len(MODELS), width=8.4, height=3.4, sharey=False)
    parts = (("blocks_flops_per_byte", "blocks"), ("attention_flops_per_byte", "attention"),
             ("softmax_flops_per_byte", "softmax"), ("total_flops_per_byte", "total"))
    for ax, (name, _, _) in zip(axes, MODELS):
        for k, (key, label) in enumerate(parts):
            y = [e["models"][name][key] / 1e6 for e in sweep]
            ax.loglog(v, y, marker="o", ms=3, color=PALETTE[k], base=2,
                      lw=2.4 if label == "total" else 1.4)
            direct_label(ax, v, y, label, color=PALETTE[k])
        b = results["best_vocab"][name]
        ax.axvline(b, color="#7f7f7f", lw=0.8, ls=":")
        ax.set_title(f"{name}: cheapest at V = {b}", fontsize=9)
        ax.set_xlabel("vocabulary size")
    axes[0].set_ylabel("forward MFLOP per byte of text")
    return {"vocab_cost": fig}


def check(results: dict[str, Any]) -> None:
    sweep = results["sweep"]
    name = MODELS[0][0]
    n = [e["models"][name]["tokens_per_window"] for e in sweep]
    att = [e["models"][name]["attention_flops_per_byte"] for e in sweep]
    assert all(a > b for a, b in zip(n, n[1:])), n  # sequences shorten as V grows
    assert all(a > b for a, b in zip(att, att[1:]))  # ... and attention falls quadratically
    # Halving-the-length-quarters-attention: the ratio is the squared token-count ratio.
    assert np.isclose(att[0] / att[-1], (n[0] / n[-1]) ** 2)
    # Adding merges only absorbs occurrences of existing tokens, so the number of rarely
    # seen tokens can only grow with the vocabulary.
    rare = [e["rare_tokens"] for e in sweep]
    assert all(a <= b for a, b in zip(rare, rare[1:])), rare
    # The bigger model's optimum is at least as large as the small model's.
    best = results["best_vocab"]
    assert best[MODELS[1][0]] >= best[MODELS[0][0]], best


EXPERIMENT = Experiment(
    name="tokenization_vocab_cost", stage=10, title="What the vocabulary size costs",
    quick=Config(vocab_sizes=(256, 512, 1024), max_train_chars=200_000, max_val_chars=50_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"cheapest V={v}") for k, v in r["best_vocab"].items()],
    description="embedding memory, softmax and attention FLOPs per byte vs vocabulary size",
)
