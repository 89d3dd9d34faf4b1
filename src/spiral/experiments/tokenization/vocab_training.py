"""The vocabulary trade-off on a trained model: small GPTs at several vocab sizes, in bits/char.

The same small GPT (sizes, recipe, steps, batch size and seeds all equal) is trained on
tiny Shakespeare's training split tokenized with characters (``CharTokenizer``) and with
byte-level BPE at several vocabulary sizes (BPE trained on the training split only), then
scored on the *whole* validation split by the shared evaluator
(:func:`spiral.evaluate.evaluate`).

Fairness rule: every training window covers the same span of text. With ``t(V)`` the
measured tokens per character of the training split under tokenizer ``V``, the context
length in tokens is ``T_V = round(W · t(V))`` for a fixed window of ``W`` characters; the
batch size (windows per step) is the same, so every step sees about ``B · W`` characters
of text whatever the vocabulary. Evaluation uses the same ``T_V``.

Per-token losses cannot be compared across tokenizers (a BPE token carries several
characters), so the score is bits per character over the split::

    bits/char = (sum of NLL over all scored tokens, in nats) / ln 2 / (characters of the split)

which equals (bits per token) × (tokens per character). The first token of the split has no
prefix and is not scored (one token of tens of thousands). Also stored: parameters and the
share in the (tied) embedding matrix, tokens per character, seconds per training step.

Chapter: stage 10, "Tokenization" (section *Training at several vocabulary sizes*).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd

CHAR = 0  # the vocabulary "size" entry that stands for the character tokenizer


@dataclass(frozen=True)
class Config:
    vocab_sizes: tuple[int, ...] = (CHAR, 256, 512, 1024, 2048, 4096)  # 0 = characters
    seeds: tuple[int, ...] = (0, 1, 2)
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    window_chars: int = 128   # W: characters of text per training window, for every vocab
    batch_size: int = 16
    max_steps: int = 800
    lr: float = 5e-3
    warmup_steps: int = 50
    max_train_chars: int = 0  # 0 = the whole split (quick variants truncate)
    max_val_chars: int = 0


def tokenize(config: Config, train: str, val: str
             ) -> dict[int, tuple[Any, np.ndarray, np.ndarray]]:
    """vocab entry -> (tokenizer, train ids, val ids); BPE is trained on ``train`` only."""
    from spiral.tokenizers.bpe import BPETokenizer
    from spiral.tokenizers.char import CharTokenizer

    out: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}
    for v in config.vocab_sizes:
        tok: Any = CharTokenizer.from_text(train) if v == CHAR else BPETokenizer().train(train, v)
        out[v] = (tok, np.asarray(tok.encode(train), dtype=np.int64),
                  np.asarray(tok.encode(val), dtype=np.int64))
    return out


def train_and_score(config: Config, tok: Any, train_ids: np.ndarray, val_ids: np.ndarray,
                    context: int, seed: int) -> dict[str, Any]:
    """Train one GPT with ``context`` tokens per window; score the whole validation stream."""
    from threadpoolctl import threadpool_limits

    from spiral.evaluate import evaluate
    from spiral.models.gpt import GPT, GPTConfig
    from spiral.optim import AdamW
    from spiral.train import TrainConfig, train

    mcfg = GPTConfig(vocab_size=tok.vocab_size, context_length=context,
                     n_layers=config.n_layers, n_heads=config.n_heads, d_model=config.d_model)
    model = GPT(mcfg, rng=np.random.default_rng(seed))
    tcfg = TrainConfig(max_steps=config.max_steps, batch_size=config.batch_size,
                       seq_len=context, lr=config.lr, warmup_steps=config.warmup_steps,
                       eval_interval=config.max_steps, eval_tokens=4 * context + 1, seed=seed,
                       progress=False, threads=1)
    opt = AdamW(model.param_groups(tcfg.weight_decay), lr=config.lr, betas=(0.9, 0.99))
    t0 = time.perf_counter()
    state = train(model, opt, train_ids, val_ids[: 4 * context + 1], tcfg,
                  np.random.default_rng(seed + 1000))
    train_s = time.perf_counter() - t0
    with threadpool_limits(limits=1, user_api="blas"):
        r = evaluate(model, val_ids)
    emb = tok.vocab_size * config.d_model  # tied: the embedding is also the output layer
    return {"train_s": train_s, "s_per_step": train_s / config.max_steps,
            "train_loss": state.history[-1]["train_loss"],
            "nats_per_token": float(r.nats), "n_scored": int(r.n_tokens),
            "total_nats": float(r.nats) * int(r.n_tokens),
            "n_params": model.num_parameters(), "embedding_params": emb}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.experiments.tokenization.compression import load_splits

    train, val = load_splits(config.max_train_chars, config.max_val_chars)
    n_val_chars = len(val)
    data = tokenize(config, train, val)
    rows, by_vocab, sweep = [], {}, []
    for v, (tok, train_ids, val_ids) in data.items():
        tpc_train = len(train_ids) / len(train)
        context = max(2, round(config.window_chars * tpc_train))  # the fairness rule
        runs = [train_and_score(config, tok, train_ids, val_ids, context, s)
                for s in config.seeds]
        bpc = [r["total_nats"] / math.log(2) / n_val_chars for r in runs]
        # the same number the other way: bits per token x tokens per character
        bpc_product = [r["nats_per_token"] / math.log(2) * r["n_scored"] / n_val_chars
                       for r in runs]
        name = "characters" if v == CHAR else f"BPE {tok.vocab_size}"
        e = {"name": name, "vocab_size": tok.vocab_size, "context_tokens": context,
             "tokens_per_char_train": tpc_train, "tokens_per_char_val": len(val_ids) / n_val_chars,
             "val_tokens": len(val_ids),
             "bits_per_char": mean_sd(bpc), "bits_per_char_product": mean_sd(bpc_product),
             "bits_per_token": mean_sd([r["nats_per_token"] / math.log(2) for r in runs]),
             "uniform_bits_per_char": math.log2(tok.vocab_size) * len(val_ids) / n_val_chars,
             "train_loss": mean_sd([r["train_loss"] for r in runs]),
             "s_per_step": mean_sd([r["s_per_step"] for r in runs]),
             "n_params": runs[0]["n_params"], "embedding_params": runs[0]["embedding_params"],
             "embedding_share": runs[0]["embedding_params"] / runs[0]["n_params"]}
        sweep.append(e)
        by_vocab["char" if v == CHAR else str(tok.vocab_size)] = e
        b = e["bits_per_char"]
        rows.append([name, f"{tpc_train:.3f}", context, f"{e['n_params']:,}",
                     f"{100 * e['embedding_share']:.0f} %",
                     f"{1e3 * e['s_per_step']['mean']:.0f}",
                     f"{b['mean']:.3f} ± {b['sd']:.3f}"])
    best = min(sweep, key=lambda e: e["bits_per_char"]["mean"])
    return {"sweep": sweep, "by_vocab": by_vocab, "n_val_chars": n_val_chars,
            "chars_per_step": config.batch_size * config.window_chars,
            "best": best["name"],
            "table": {"columns": ["tokenizer", "tokens/char (train)",
                                  f"context (tokens per {config.window_chars} chars)",
                                  "parameters", "embedding share", "ms/step",
                                  "val bits/char"],
                      "rows": rows}}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    sweep = results["sweep"]
    fig, axes = new_figure(1, 2, width=8.4, height=3.4)
    xs = [e["vocab_size"] for e in sweep]
    ms = [e["bits_per_char"]["mean"] for e in sweep]
    sds = [e["bits_per_char"]["sd"] for e in sweep]
    ax = axes[0]
    for i, e in enumerate(sweep):
        c = PALETTE[1] if e["name"] == "characters" else PALETTE[0]
        ax.errorbar([xs[i]], [ms[i]], yerr=[sds[i]], color=c, marker="o", ms=4, capsize=3)
        ax.annotate(e["name"], xy=(xs[i], ms[i]), xytext=(5, 4), textcoords="offset points",
                    fontsize=8, color=c)
    bpe = [i for i, e in enumerate(sweep) if e["name"] != "characters"]
    ax.plot([xs[i] for i in bpe], [ms[i] for i in bpe], color=PALETTE[0], lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(xs) * 0.7, max(xs) * 2.2)
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("validation bits per character")
    ax.set_title("loss per character (mean ± sd over seeds)", fontsize=9)
    ax2 = axes[1]
    ctx = [e["context_tokens"] for e in sweep]
    step = [1e3 * e["s_per_step"]["mean"] for e in sweep]
    ax2.plot(xs, ctx, color=PALETTE[2], marker="o", ms=3, lw=1)
    k = min(1, len(xs) - 1)
    ax2.annotate("tokens per window", xy=(xs[k], ctx[k]), xytext=(4, 6),
                 textcoords="offset points", fontsize=8, color=PALETTE[2])
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("vocabulary size")
    ax2.set_ylabel("tokens per training window", color=PALETTE[2])
    ax2.set_ylim(0, max(ctx) * 1.15)
    ax3 = ax2.twinx()
    ax3.plot(xs, step, color=PALETTE[4], marker="s", ms=3, lw=1, ls="--")
    k = min(2, len(xs) - 1)
    ax3.annotate("ms per step", xy=(xs[k], step[k]), xytext=(4, -14),
                 textcoords="offset points", fontsize=8, color=PALETTE[4])
    ax3.set_ylim(0, max(step) * 1.15)
    ax3.set_ylabel("ms per training step", color=PALETTE[4])
    ax2.set_title(f"same {results['chars_per_step']:,} characters per step", fontsize=9)
    return {"vocab_training": fig}


def check(results: dict[str, Any]) -> None:
    sweep = results["sweep"]
    bpe = [e for e in sweep if e["name"] != "characters"]
    for e in sweep:
        b = e["bits_per_char"]
        # the two routes to bits/char agree (sum over tokens / chars = bits/token x tokens/char)
        assert np.allclose(b["values"], e["bits_per_char_product"]["values"], rtol=1e-9)
        # every model learned something: below its own uniform guess, in bits per character
        assert b["mean"] < e["uniform_bits_per_char"], e["name"]
        assert np.isfinite(b["mean"])
    # the fairness rule: larger BPE vocabularies read fewer tokens per window of text
    tpc = [e["tokens_per_char_train"] for e in bpe]
    assert all(a > b for a, b in zip(tpc, tpc[1:])), tpc
    ctx = [e["context_tokens"] for e in bpe]
    assert all(a >= b for a, b in zip(ctx, ctx[1:])), ctx
    assert ctx[0] > ctx[-1]
    # the chapter's claim: at equal text per step and equal steps, every BPE vocabulary with
    # merges ends below the character model by more than the seed spread of either
    char = results["by_vocab"]["char"]["bits_per_char"]
    for e in bpe:
        if e["vocab_size"] > 256:
            b = e["bits_per_char"]
            assert b["mean"] + b["sd"] < char["mean"] - char["sd"], (e["name"], b, char)
    # ... each doubling of a BPE vocabulary helps less than the one before
    means = [e["bits_per_char"]["mean"] for e in bpe]
    gains = [a - b for a, b in zip(means, means[1:])]
    assert all(g > 0 for g in gains) and all(a > b for a, b in zip(gains, gains[1:])), gains
    # ... and characters and plain bytes (the same segmentation of ASCII text) agree within
    # the seed spread (only meaningful with several seeds)
    byte = results["by_vocab"].get("256", {}).get("bits_per_char")
    if byte is not None and char["n"] >= 3:
        assert abs(byte["mean"] - char["mean"]) < byte["sd"] + char["sd"], (byte, char)
    # the embedding's share of the parameters grows with the vocabulary
    share = [e["embedding_share"] for e in bpe]
    assert all(a < b for a, b in zip(share, share[1:])), share


EXPERIMENT = Experiment(
    name="tokenization_vocab_training", stage=10,
    title="Small GPTs trained at several vocabulary sizes",
    quick=Config(vocab_sizes=(CHAR, 256, 512), seeds=(0,), n_layers=1, d_model=32,
                 window_chars=32, batch_size=8, max_steps=150, warmup_steps=10,
                 max_train_chars=100_000, max_val_chars=5_000),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(e["name"], f"{e['bits_per_char']['mean']:.3f} bits/char")
                       for e in r["sweep"]],
    description="bits per character of the same small GPT at several vocab sizes",
)
