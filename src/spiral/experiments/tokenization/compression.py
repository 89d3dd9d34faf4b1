"""Tokenization as compression: bytes per token, and bits per byte of a zero-order code.

BPE is trained on the tiny-Shakespeare training split at a sweep of vocabulary sizes and
measured on the validation split. Two numbers per size:

* compression ``bytes / token`` (and its spread over 10 equal validation blocks);
* the cost of coding the text with an optimal *zero-order* code over the tokens. With
  token frequencies ``p`` estimated on training text, Shannon's optimal code lengths
  ``l_i = -log2 p_i`` give ``H(p)`` bits per token, and Huffman's code achieves an average
  length ``L`` with ``H <= L < H + 1``. Bits per byte = bits per token / (bytes / token):
  a larger vocabulary moves structure from the model into the tokenizer.

Chapter: stage 10, "Tokenization" (sections *Tokenization is compression*, *Shannon and
Huffman*).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment


@dataclass(frozen=True)
class Config:
    vocab_sizes: tuple[int, ...] = (256, 320, 512, 1024, 2048, 4096, 8192, 16384)
    max_train_chars: int = 0  # 0 = the whole training split
    max_val_chars: int = 0
    n_blocks: int = 10  # validation blocks for the spread of bytes/token


def load_splits(max_train_chars: int = 0, max_val_chars: int = 0) -> tuple[str, str]:
    """Tiny Shakespeare (train, validation), optionally truncated for quick variants."""
    from spiral import data

    s = data.get_splits("shakespeare")
    train = s.train[:max_train_chars] if max_train_chars else s.train
    val = s.val[:max_val_chars] if max_val_chars else s.val
    return train, val


def entropy_bits(counts: Mapping[Any, int]) -> float:
    """Shannon entropy ``H = -sum p log2 p`` of the empirical distribution, in bits."""
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values() if c > 0)


def huffman_lengths(counts: Mapping[Any, int]) -> dict[Any, int]:
    """Code length of each symbol in a Huffman code for ``counts`` (ties by insertion order).

    >>> huffman_lengths({"a": 2, "b": 1, "c": 1})
    {'a': 1, 'b': 2, 'c': 2}
    """
    items = [(c, i, [s]) for i, (s, c) in enumerate(counts.items()) if c > 0]
    lengths = {s: 0 for _, _, [s] in items}
    if len(items) == 1:
        return {items[0][2][0]: 1}
    heapq.heapify(items)
    tiebreak = len(items)
    while len(items) > 1:
        c1, _, s1 = heapq.heappop(items)  # the two least frequent subtrees...
        c2, _, s2 = heapq.heappop(items)
        for s in s1 + s2:  # ...go one level deeper
            lengths[s] += 1
        heapq.heappush(items, (c1 + c2, tiebreak, s1 + s2))
        tiebreak += 1
    return lengths


def zero_order_code(train_ids: list[int], val_ids: list[int], n_bytes: int) -> dict[str, float]:
    """Bits per byte of ``val`` under Huffman/Shannon codes fitted on ``train`` token counts.

    Tokens unseen in training get count 1 (add-one on the vocabulary they actually use).
    """
    counts = Counter(train_ids)
    for i in set(val_ids) - counts.keys():
        counts[i] = 1
    h = entropy_bits(counts)
    lengths = huffman_lengths(counts)
    n = sum(counts.values())
    huff_avg = sum(counts[s] * lengths[s] for s in counts) / n
    val_counts = Counter(val_ids)
    cross = -sum(c * math.log2(counts[s] / n) for s, c in val_counts.items())  # Shannon lengths
    huff_val = sum(c * lengths[s] for s, c in val_counts.items())
    return {
        "entropy_bits_per_token": h,
        "huffman_bits_per_token": huff_avg,
        "val_shannon_bits_per_byte": cross / n_bytes,
        "val_huffman_bits_per_byte": huff_val / n_bytes,
    }


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.tokenizers.bpe import BPETokenizer

    train, val = load_splits(config.max_train_chars, config.max_val_chars)
    val_bytes = len(val.encode("utf-8"))
    blocks = [val[i * len(val) // config.n_blocks:(i + 1) * len(val) // config.n_blocks]
              for i in range(config.n_blocks)]
    rows, sweep = [], []
    for v in config.vocab_sizes:
        tok = BPETokenizer().train(train, v)
        train_ids, val_ids = tok.encode(train), tok.encode(val)
        per_block = [len(b.encode("utf-8")) / len(tok.encode(b)) for b in blocks]
        code = zero_order_code(train_ids, val_ids, val_bytes)
        entry = {
            "vocab_size": tok.vocab_size,
            "requested": v,
            "train_bytes_per_token": len(train.encode("utf-8")) / len(train_ids),
            "val_bytes_per_token": val_bytes / len(val_ids),
            "val_block_bytes_per_token": {"mean": float(np.mean(per_block)),
                                          "sd": float(np.std(per_block, ddof=1))},
            "val_tokens": len(val_ids),
            **code,
        }
        sweep.append(entry)
        rows.append([
            tok.vocab_size, f"{entry['val_bytes_per_token']:.3f}",
            f"{entry['train_bytes_per_token']:.3f}",
            f"{code['entropy_bits_per_token']:.2f}", f"{code['huffman_bits_per_token']:.2f}",
            f"{code['val_huffman_bits_per_byte']:.3f}",
        ])
    import zlib

    return {
        "sweep": sweep,
        "by_vocab": {str(e["requested"]): e for e in sweep},
        "val_bytes": val_bytes,
        "zlib_bits_per_byte": 8 * len(zlib.compress(val.encode("utf-8"), 9)) / val_bytes,
        "table": {
            "columns": ["vocab size", "bytes/token (val)", "bytes/token (train)",
                        "H (bits/token)", "Huffman (bits/token)", "Huffman bits/byte (val)"],
            "rows": rows,
        },
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, direct_label, new_figure

    sweep = results["sweep"]
    v = [e["vocab_size"] for e in sweep]
    fig, (ax1, ax2) = new_figure(1, 2, width=8.0, height=3.4)
    for key, name, color in (("val_bytes_per_token", "validation", PALETTE[0]),
                             ("train_bytes_per_token", "training", PALETTE[1])):
        y = [e[key] for e in sweep]
        ax1.semilogx(v, y, marker="o", color=color, base=2)
        direct_label(ax1, v, y, name, color=color)
    ax1.set_xlabel("vocabulary size")
    ax1.set_ylabel("bytes per token")
    ax1.set_title("Compression grows with the vocabulary")
    for key, name, color in (("val_huffman_bits_per_byte", "Huffman code", PALETTE[2]),
                             ("val_shannon_bits_per_byte", "Shannon lengths", PALETTE[3])):
        y = [e[key] for e in sweep]
        ax2.semilogx(v, y, marker="o", color=color, base=2)
        direct_label(ax2, v, y, name, color=color, dy=-6 if "Shannon" in name else 6)
    ax2.axhline(results["zlib_bits_per_byte"], color="#7f7f7f", lw=1, ls="--")
    ax2.annotate("zlib -9", (v[0], results["zlib_bits_per_byte"]), xytext=(0, 4),
                 textcoords="offset points", fontsize=8, color="#7f7f7f")
    ax2.set_xlabel("vocabulary size")
    ax2.set_ylabel("bits per byte (validation)")
    ax2.set_title("A zero-order code over the tokens")
    return {"compression": fig}


def check(results: dict[str, Any]) -> None:
    sweep = results["sweep"]
    bpt = [e["val_bytes_per_token"] for e in sweep]
    assert all(a < b for a, b in zip(bpt, bpt[1:])), bpt  # more merges, more bytes per token
    assert sweep[0]["vocab_size"] == 256 and abs(sweep[0]["train_bytes_per_token"] - 1) < 1e-12
    for e in sweep:  # Shannon's bound and Huffman's guarantee: H <= L < H + 1
        assert e["entropy_bits_per_token"] <= e["huffman_bits_per_token"] + 1e-9
        assert e["huffman_bits_per_token"] < e["entropy_bits_per_token"] + 1
    # The zero-order code gets cheaper per byte as tokens absorb context.
    bpb = [e["val_huffman_bits_per_byte"] for e in sweep]
    assert bpb[-1] < 0.8 * bpb[0], bpb


EXPERIMENT = Experiment(
    name="tokenization_compression", stage=10, title="Compression vs vocabulary size",
    quick=Config(vocab_sizes=(256, 512, 1024), max_train_chars=200_000, max_val_chars=50_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(f"V={e['vocab_size']}", f"{e['val_bytes_per_token']:.2f} B/tok")
                       for e in r["sweep"][::3]],
    description="bytes per token and zero-order code length vs BPE vocabulary size",
)
