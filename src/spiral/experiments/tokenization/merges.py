"""The merge sequence of BPE, and token boundaries drawn on real text.

Trains byte-level BPE on the tiny-Shakespeare training split and records, for every merge
``k``: the pair's frequency at the moment it was merged, and the length in bytes of the
new token. Greedy BPE merges the most frequent pair, and a merge can only lower other
pairs' counts (new pairs contain the new token, which occurs at most as often as the pair
it replaced), so the frequency sequence never increases. The second figure colours the
tokens of a validation passage at several vocabulary sizes.

Chapter: stage 10, "Tokenization" (section *Watching BPE learn*).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.tokenization.compression import load_splits


@dataclass(frozen=True)
class Config:
    vocab_size: int = 4096
    shown_vocab_sizes: tuple[int, ...] = (256, 300, 512, 1024, 4096)
    passage_lines: int = 5
    first_merges: int = 24
    max_train_chars: int = 0
    max_val_chars: int = 0


def visible(s: str) -> str:
    """Make whitespace visible: space -> '·', newline -> '↵', tab -> '→'."""
    return s.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def passage(val: str, n_lines: int) -> str:
    """``n_lines`` lines that start at a speaker's name (after the first blank line)."""
    start = val.find("\n\n") + 2
    return "".join(val[start:].splitlines(keepends=True)[:n_lines])


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.tokenizers.bpe import BPETokenizer

    train, val = load_splits(config.max_train_chars, config.max_val_chars)
    tok = BPETokenizer().train(train, config.vocab_size)
    lengths = [len(t) for t in tok.vocab[256:]]
    text = passage(val, config.passage_lines)
    segmentations = {}
    for v in config.shown_vocab_sizes:
        small = BPETokenizer(tok.merges[: v - 256])  # a prefix of the merge list
        ids = small.encode(text)
        segmentations[str(v)] = [small.token_bytes(i).decode("utf-8", "replace") for i in ids]
    rows = []
    for k in range(min(config.first_merges, len(tok.merges))):
        a, b = tok.merges[k]
        rows.append([k + 1, visible(tok.vocab[a].decode("utf-8", "replace")),
                     visible(tok.vocab[b].decode("utf-8", "replace")),
                     visible(tok.vocab[256 + k].decode("utf-8", "replace")),
                     tok.merge_counts[k]])
    # Learned tokens that are a whole word of the training text, with or without its space.
    vocabulary = {w.encode() for w in re.findall(r"[A-Za-z]+", train)}
    words = sum(1 for t in tok.vocab[256:]
                if (m := re.fullmatch(rb" ?([A-Za-z]{2,})", t)) and m.group(1) in vocabulary)
    q = len(lengths) // 4
    return {
        "merge_counts": tok.merge_counts,
        "token_lengths": lengths,
        "mean_length_first_quarter": float(np.mean(lengths[:q])),
        "mean_length_last_quarter": float(np.mean(lengths[-q:])),
        "longest_token": visible(max(tok.vocab[256:], key=len).decode("utf-8", "replace")),
        "word_like_tokens": words,
        "n_merges": len(tok.merges),
        "passage": text,
        "segmentations": segmentations,
        "tokens_in_passage": {v: len(s) for v, s in segmentations.items()},
        "first_merges": {"columns": ["merge", "left", "right", "new token", "pair count"],
                         "rows": rows},
    }


def _draw_tokens(ax: Any, tokens: list[str], width: int, title: str) -> None:
    from matplotlib.patches import Rectangle

    colors = ("#dbe8f6", "#f6dede", "#e0efd8", "#ebe2f3")
    row = col = 0
    for k, t in enumerate(tokens):
        for ch in t:
            if col >= width:
                row, col = row + 1, 0
            ax.add_patch(Rectangle((col, row), 1, 1, color=colors[k % len(colors)], lw=0))
            ax.text(col + 0.5, row + 0.55, visible(ch), ha="center", va="center",
                    fontsize=7, family="DejaVu Sans Mono", color="#222222")
            col += 1
            if ch == "\n":
                row, col = row + 1, 0
        if col > 0:  # a thin bar marks each token boundary
            ax.plot([col, col], [row + 0.05, row + 0.95], color="#444444", lw=0.5)
    ax.set_xlim(0, width)
    ax.set_ylim(row + 1, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9, loc="left")


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    counts = np.asarray(results["merge_counts"], dtype=float)
    lengths = np.asarray(results["token_lengths"], dtype=float)
    k = np.arange(1, len(counts) + 1)
    fig1, (ax1, ax2) = new_figure(1, 2, width=8.0, height=3.2)
    ax1.loglog(k, counts, color=PALETTE[0])
    ax1.set_xlabel("merge number")
    ax1.set_ylabel("pair count when merged")
    ax1.set_title("Each merge saves fewer tokens")
    ax2.scatter(k, lengths, s=2, alpha=0.25, color=PALETTE[1], lw=0)
    window = max(1, len(k) // 40)
    smooth = np.convolve(lengths, np.ones(window) / window, mode="valid")
    ax2.plot(k[window - 1:], smooth, color=PALETTE[0], lw=1.8)
    ax2.set_xlabel("merge number")
    ax2.set_ylabel("new token length (bytes)")
    ax2.set_title("... and builds longer tokens")
    segs = results["segmentations"]
    n_rows = results["passage"].count("\n")
    fig2, axes = new_figure(len(segs), 1, width=7.2, height=(0.2 * n_rows + 0.3) * len(segs))
    for ax, (v, tokens) in zip(np.atleast_1d(axes), segs.items()):
        _draw_tokens(ax, tokens, 64, f"vocab {v}: {len(tokens)} tokens")
    return {"merge_sequence": fig1, "token_boundaries": fig2}


def check(results: dict[str, Any]) -> None:
    counts = results["merge_counts"]
    assert all(a >= b for a, b in zip(counts, counts[1:])), "merge counts must never increase"
    assert results["mean_length_last_quarter"] > results["mean_length_first_quarter"]
    n = [len(s) for s in results["segmentations"].values()]
    assert all(a >= b for a, b in zip(n, n[1:])), n  # more merges, fewer tokens
    for tokens in results["segmentations"].values():
        assert "".join(tokens) == results["passage"]


EXPERIMENT = Experiment(
    name="tokenization_merges", stage=10, title="The merge sequence and token boundaries",
    quick=Config(vocab_size=600, shown_vocab_sizes=(256, 300, 600), max_train_chars=200_000,
                 max_val_chars=20_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [("merges", r["n_merges"]), ("longest token", r["longest_token"])],
    description="pair counts and token lengths over the merges; coloured token boundaries",
)
