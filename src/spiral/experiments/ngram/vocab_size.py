"""Vocabulary size: n-gram models over BPE tokens of growing vocabulary, in bits per character.

A bigger vocabulary packs more text into each token (fewer tokens per character, so a
context of n - 1 tokens spans more text) but multiplies the state space (|V|^(n-1) possible
contexts, each seen fewer times). For byte-level BPE vocabularies of several sizes we fit
Kneser–Ney models of every order on tiny Shakespeare's training split, pick the order and
discount on the tune split, and score validation in bits per *character* (total bits over
the characters the scored tokens cover), the only unit that compares across vocabularies.
Chapter: stages/stage-01-ngrams ("Trade-offs, measured").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment
from spiral.experiments.ngram import corpora as nc
from spiral.ngram import NGramLM
from spiral.plotting import PALETTE, new_figure
from spiral.tokenizers.bpe import BPETokenizer


@dataclass(frozen=True)
class Config:
    vocab_sizes: tuple[int, ...] = (256, 320, 512, 1024, 2048)  # 256 = bytes (characters)
    orders: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    d_grid: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0)
    max_chars: int | None = None  # quick runs use a prefix of each split


def _bits_per_char(lm: NGramLM, ids: list[int], tok: BPETokenizer) -> float:
    nll = lm.token_nll(np.asarray(ids, dtype=np.int64))  # scores ids[order - 1:]
    n_bytes = sum(len(tok.vocab[i]) for i in ids[lm.order - 1 :])
    return float(nll.sum() / math.log(2) / n_bytes)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    c = nc.load("shakespeare", max_chars=config.max_chars)
    res: dict[str, Any] = {"vocab_sizes": list(config.vocab_sizes), "by_vocab": []}
    rows = []
    for vs in config.vocab_sizes:
        tok = BPETokenizer().train(c.fit, vs)  # the tokenizer never sees tune or validation
        fit, tune, val = tok.encode(c.fit), tok.encode(c.tune), tok.encode(c.val)
        train = fit + tune  # the training region, encoded in its two parts
        used = len(set(train))
        best = (math.inf, 1, 0.75)
        tune_by_order = []
        for n in config.orders:
            if (used + 1) ** n >= 2**62:
                break
            part = NGramLM(n, unk=True).fit(np.asarray(fit, dtype=np.int64))
            curve = [_bits_per_char(part.with_smoothing("kneser_ney", discount=d), tune, tok)
                     for d in config.d_grid]
            i = int(np.argmin(curve))
            tune_by_order.append(curve[i])
            best = min(best, (curve[i], n, config.d_grid[i]))
        _, n, d = best
        lm = NGramLM(n, "kneser_ney", discount=d, unk=True).fit(np.asarray(train, np.int64))
        seen3 = NGramLM(3).fit(np.asarray(train, np.int64)).table(3).n_contexts
        out: dict[str, Any] = {
            "vocab_size": vs, "tokens_used": used,
            "chars_per_token": len(c.val) / len(val),
            "order": n, "discount": d,
            "val_bits_per_char": _bits_per_char(lm, val, tok),
            "tune_bits_by_order": tune_by_order,
            "contexts_seen_order3": seen3,
            "possible_contexts_order3": float(used) ** 2,
            "val_tokens_unseen": len(set(val) - set(train)),
        }
        res["by_vocab"].append(out)
        rows.append([vs, used, f"{out['chars_per_token']:.2f}", n,
                     f"{out['val_bits_per_char']:.3f}", seen3,
                     f"{seen3 / out['possible_contexts_order3']:.2%}"])
    best_i = int(np.argmin([r["val_bits_per_char"] for r in res["by_vocab"]]))
    res["best_vocab_size"] = config.vocab_sizes[best_i]
    res["char_level_bits"] = res["by_vocab"][0]["val_bits_per_char"]
    res["best_bits"] = res["by_vocab"][best_i]["val_bits_per_char"]
    res["table"] = {"columns": ["BPE vocabulary", "tokens used", "characters per token",
                                "order (tuned)", "val bits/char", "order-3 contexts seen",
                                "share of possible"], "rows": rows}
    res["deterministic"] = True
    return res


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 2, width=8.4, height=3.2)
    for color, r in zip(PALETTE, results["by_vocab"]):
        orders = list(range(1, len(r["tune_bits_by_order"]) + 1))
        axes[0].plot(orders, r["tune_bits_by_order"], marker="o", ms=3, color=color)
        axes[0].annotate(f"|V| = {r['vocab_size']}", xy=(1, r["tune_bits_by_order"][0]),
                         xytext=(-6, 0), textcoords="offset points", ha="right", va="center",
                         fontsize=7, color=color)
    axes[0].set_xlabel("order n (in tokens)")
    axes[0].set_ylabel("tune bits per character")
    axes[0].set_title("Kneser–Ney over BPE tokens", loc="left")
    longest = max(len(r["tune_bits_by_order"]) for r in results["by_vocab"])
    axes[0].set_xlim(-0.6, longest + 0.3)
    axes[0].set_xticks(range(1, longest + 1))
    vs = [r["vocab_size"] for r in results["by_vocab"]]
    bits = [r["val_bits_per_char"] for r in results["by_vocab"]]
    axes[1].plot(vs, bits, marker="o", color=PALETTE[1])
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("BPE vocabulary size (256 = bytes)")
    axes[1].set_ylabel("validation bits per character")
    axes[1].set_title("best model per vocabulary", loc="left")
    return {"vocab_size": fig}


def check(results: dict[str, Any]) -> None:
    r = results["by_vocab"]
    cpt = [x["chars_per_token"] for x in r]
    assert all(a < b for a, b in zip(cpt, cpt[1:])), "bigger vocabularies pack more text"
    share = [x["contexts_seen_order3"] / x["possible_contexts_order3"] for x in r]
    assert share[-1] < share[0], "bigger vocabularies leave more of the state space unseen"
    assert all(math.isfinite(x["val_bits_per_char"]) for x in r)


EXPERIMENT = Experiment(
    name="ngram_vocab_size",
    stage=1,
    title="Vocabulary size: tokens per character against state space",
    quick=Config(vocab_sizes=(256, 512), orders=(1, 2, 3), d_grid=(0.8,), max_chars=300_000),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [("best vocabulary", r["best_vocab_size"]),
                       ("bits/char", f"{r['best_bits']:.3f}")],
)
