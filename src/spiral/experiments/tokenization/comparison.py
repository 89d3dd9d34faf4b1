"""BPE vs Unigram LM vs characters vs bytes, on the same text and the same pre-tokenizer.

All four tokenizers are fitted on the tiny-Shakespeare training split and measured on the
validation split: bytes per token, tokens per word, the share of words that come out as a
single token, the cost of a zero-order Huffman code over the tokens, and training time.
BPE builds its vocabulary bottom-up by greedy merges; Unigram starts from a large set of
substrings and prunes top-down by likelihood (EM), then segments by Viterbi.

Chapter: stage 10, "Tokenization" (section *BPE, Unigram, characters*).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.tokenization.compression import load_splits, zero_order_code

EXAMPLES = ("gentlemen", "neighbour", "wherefore", "unfortunate", "Northumberland",
            "marriage", "thousand", "kingdom")


@dataclass(frozen=True)
class Config:
    vocab_sizes: tuple[int, ...] = (512, 1024, 2048, 4096)
    example_vocab: int = 1024
    max_train_chars: int = 0
    max_val_chars: int = 0


def measure(tok: Any, train: str, val: str, seconds: float) -> dict[str, float]:
    val_bytes = len(val.encode("utf-8"))
    train_ids, val_ids = tok.encode(train), tok.encode(val)
    words = re.findall(r" [A-Za-z]+", val)
    lengths = [len(tok.encode(w)) for w in words]
    code = zero_order_code(train_ids, val_ids, val_bytes)
    return {
        "vocab_size": tok.vocab_size,
        "bytes_per_token": val_bytes / len(val_ids),
        "tokens_per_word": float(np.mean(lengths)),
        "single_token_words": float(np.mean([n == 1 for n in lengths])),
        "huffman_bits_per_byte": code["val_huffman_bits_per_byte"],
        "train_seconds": seconds,
    }


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, UnigramTokenizer

    train, val = load_splits(config.max_train_chars, config.max_val_chars)
    out: dict[str, Any] = {"rows": {}, "examples": {}}
    t0 = time.perf_counter()
    char = CharTokenizer.from_text(train)
    out["rows"]["characters"] = measure(char, train, val, time.perf_counter() - t0)
    out["rows"]["bytes"] = measure(ByteTokenizer(), train, val, 0.0)
    for v in config.vocab_sizes:
        for name, cls in (("BPE", BPETokenizer), ("Unigram", UnigramTokenizer)):
            t0 = time.perf_counter()
            tok = cls().train(train, v)
            seconds = time.perf_counter() - t0
            out["rows"][f"{name} {v}"] = measure(tok, train, val, seconds)
            if v == config.example_vocab:
                out["examples"][name] = {
                    w: [tok.decode([i]) for i in tok.encode(" " + w)] for w in EXAMPLES}
    rows = [[k, r["vocab_size"], f"{r['bytes_per_token']:.3f}", f"{r['tokens_per_word']:.2f}",
             f"{100 * r['single_token_words']:.1f} %", f"{r['huffman_bits_per_byte']:.3f}",
             f"{r['train_seconds']:.2f}"] for k, r in out["rows"].items()]
    out["table"] = {"columns": ["tokenizer", "vocab size", "bytes/token", "tokens/word",
                                "one-token words", "Huffman bits/byte", "train s"],
                    "rows": rows}
    ex = out["examples"]
    out["examples_table"] = {
        "columns": ["word", f"BPE {config.example_vocab}", f"Unigram {config.example_vocab}"],
        "rows": [[w, " + ".join(t.replace(" ", "·") for t in ex["BPE"][w]),
                  " + ".join(t.replace(" ", "·") for t in ex["Unigram"][w])] for w in EXAMPLES]
        if ex else [],
    }
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    rows = results["rows"]
    fig, ax = new_figure(width=6.0, height=3.4)
    for k, name in enumerate(("BPE", "Unigram")):
        pts = [(r["vocab_size"], r["bytes_per_token"]) for key, r in rows.items()
               if key.startswith(name + " ")]
        x, y = zip(*pts)
        ax.semilogx(x, y, marker="o", color=PALETTE[k], base=2)
        direct_label(ax, list(x), list(y), name, color=PALETTE[k], dy=-7 if k == 0 else 7)
    for k, name in enumerate(("characters", "bytes")):
        r = rows[name]
        ax.plot([r["vocab_size"]], [r["bytes_per_token"]], marker="s", color=PALETTE[k + 2])
        ax.annotate(name, (r["vocab_size"], r["bytes_per_token"]), xytext=(5, 4 - 10 * k),
                    textcoords="offset points", fontsize=8, color=PALETTE[k + 2])
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("bytes per token (validation)")
    ax.set_title("Same text, same pre-tokenizer, four tokenizers")
    return {"comparison": fig}


def check(results: dict[str, Any]) -> None:
    rows = results["rows"]
    base = rows["characters"]["bytes_per_token"]
    for key, r in rows.items():
        if key.startswith(("BPE", "Unigram")):
            assert r["bytes_per_token"] > 1.5 * base, (key, r)  # subwords beat characters
            assert r["tokens_per_word"] < rows["characters"]["tokens_per_word"]
    for key in rows:
        if key.startswith("BPE "):
            b = rows[key]["bytes_per_token"]
            u = rows["Unigram " + key[4:]]["bytes_per_token"]
            assert abs(u / b - 1) < 0.15, (key, b, u)  # neither method dominates by much


EXPERIMENT = Experiment(
    name="tokenization_comparison", stage=10, title="BPE vs Unigram vs characters vs bytes",
    quick=Config(vocab_sizes=(1024,), max_train_chars=150_000, max_val_chars=30_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"{v['bytes_per_token']:.2f} B/tok")
                       for k, v in r["rows"].items()][:4],
    description="bytes per token, tokens per word and code length for four tokenizers",
)
