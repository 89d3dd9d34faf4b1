"""Tokenization pathologies, measured: numbers, rare words, whitespace and case.

BPE is trained on the tiny-Shakespeare training split mixed with synthetic arithmetic
lines (``"372 + 4519 = 4891"``, operands of 1-4 random digits; a fresh sample per seed),
once with the GPT-2 pre-tokenizer and once with the GPT-4 (cl100k) one, which cuts digit
runs into groups of at most three. Then:

* numbers: how held-out 4-digit numbers are cut (segmentation patterns such as ``2+2``
  or ``3+1`` digits) -- the same place value lands in different tokens;
* rare words: tokens per validation word, binned by how often the word occurs in training;
* whitespace and case: the token cost of ``word`` / `` word`` / ``Word`` / ``WORD``, and
  bytes per token of the validation text upper-cased.

Chapter: stage 10, "Tokenization" (section *Pathologies*).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.tokenization.compression import load_splits

BINS = ((0, 0, "unseen"), (1, 9, "1-9"), (10, 99, "10-99"), (100, 10**12, "100+"))
VARIANTS = (("word", "{w}"), ("␣word", " {w}"), ("Word", "{W}"), ("␣Word", " {W}"),
            ("WORD", "{U}"), ("␣WORD", " {U}"))


@dataclass(frozen=True)
class Config:
    vocab_size: int = 4096
    arithmetic_lines: int = 20_000
    held_out_numbers: int = 2000
    seeds: tuple[int, ...] = (0, 1, 2)
    max_train_chars: int = 0
    max_val_chars: int = 0


def arithmetic(n: int, rng: np.random.Generator) -> str:
    """``n`` lines ``a + b = c`` with operands of 1-4 random digits."""
    digits = rng.integers(1, 5, size=(n, 2))
    a = rng.integers(0, 10 ** digits[:, 0])
    b = rng.integers(0, 10 ** digits[:, 1])
    return "".join(f"{x} + {y} = {x + y}\n" for x, y in zip(a.tolist(), b.tolist()))


def digit_pattern(tok: Any, number: str) -> str:
    """Digits per token of `` number`` (leading space as in running text), e.g. ``'2+2'``."""
    pieces = [tok.token_bytes(i).decode("utf-8").strip() for i in tok.encode(" " + number)]
    return "+".join(str(len(p)) for p in pieces if p)


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral.tokenizers.bpe import BPETokenizer, compression
    from spiral.tokenizers.pretokenize import GPT2_PATTERN, GPT4_PATTERN

    train, val = load_splits(config.max_train_chars, config.max_val_chars)
    word_counts = Counter(re.findall(r"[A-Za-z]+", train))
    frequent = [w.lower() for w, _ in word_counts.most_common(200) if w.islower()][:30]
    per_pattern: dict[str, dict[str, list[float]]] = {}
    patterns: dict[str, Counter[str]] = {}
    rare_rows: dict[str, list[float]] = {}
    variants: dict[str, list[float]] = {}
    case: dict[str, list[float]] = {"original": [], "lower": [], "UPPER": []}
    for seed in config.seeds:
        seed_rng = np.random.default_rng(seed)
        corpus = train + arithmetic(config.arithmetic_lines, seed_rng)
        numbers = [str(x) for x in seed_rng.integers(1000, 10000, config.held_out_numbers)]
        for name, pattern in (("gpt2", GPT2_PATTERN), ("gpt4", GPT4_PATTERN)):
            tok = BPETokenizer(pattern=pattern).train(corpus, config.vocab_size)
            segs = Counter(digit_pattern(tok, n) for n in numbers)
            patterns.setdefault(name, Counter()).update(segs)
            stats = per_pattern.setdefault(name, {"tokens_per_number": [], "n_patterns": [],
                                                  "modal_share": []})
            stats["tokens_per_number"].append(
                float(np.mean([len(tok.encode(" " + n)) for n in numbers])))
            stats["n_patterns"].append(len(segs))
            stats["modal_share"].append(segs.most_common(1)[0][1] / len(numbers))
            if name != "gpt2":
                continue
            val_words = re.findall(r"[A-Za-z]+", val)
            for lo, hi, label in BINS:
                ws = [w for w in val_words if lo <= word_counts.get(w, 0) <= hi]
                rare_rows.setdefault(label, []).append(
                    float(np.mean([len(tok.encode(" " + w)) for w in ws])) if ws else np.nan)
            for label, fmt in VARIANTS:
                variants.setdefault(label, []).append(float(np.mean([
                    len(tok.encode(fmt.format(w=w, W=w.capitalize(), U=w.upper())))
                    for w in frequent])))
            case["original"].append(compression(tok, val))
            case["lower"].append(compression(tok, val.lower()))
            case["UPPER"].append(compression(tok, val.upper()))
    numbers_summary = {k: {m: mean_sd(v) for m, v in d.items()} for k, d in per_pattern.items()}

    def ms(values: list[float], fmt: str = ".2f") -> str:
        s = mean_sd(values)
        return f"{s['mean']:{fmt}} ± {s['sd']:{fmt}}"

    return {
        "numbers": numbers_summary,
        "number_patterns": {k: dict(c.most_common(8)) for k, c in patterns.items()},
        "rare_words": {k: mean_sd(v) for k, v in rare_rows.items()},
        "variants": {k: mean_sd(v) for k, v in variants.items()},
        "case_bytes_per_token": {k: mean_sd(v) for k, v in case.items()},
        "frequent_words": frequent,
        "numbers_table": {
            "columns": ["pre-tokenizer", "tokens per 4-digit number", "distinct digit patterns",
                        "share of the commonest pattern"],
            "rows": [[k, ms(d["tokens_per_number"]), ms(d["n_patterns"], ".1f"),
                      ms(d["modal_share"])] for k, d in per_pattern.items()],
        },
        "rare_table": {
            "columns": ["word's count in training", "tokens per word (validation)"],
            "rows": [[k, ms(v)] for k, v in rare_rows.items()],
        },
        "variants_table": {
            "columns": ["form (30 frequent words)", "tokens per word"],
            "rows": [[k, ms(v)] for k, v in variants.items()],
        },
    }


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    fig, (ax1, ax2) = new_figure(1, 2, width=8.4, height=3.2)
    labels = list(results["rare_words"])
    y = [results["rare_words"][k]["mean"] for k in labels]
    err = [results["rare_words"][k]["sd"] for k in labels]
    ax1.bar(range(len(labels)), y, yerr=err, color=PALETTE[0], width=0.6)
    ax1.set_xticks(range(len(labels)), labels)
    ax1.set_xlabel("occurrences of the word in training")
    ax1.set_ylabel("tokens per validation word")
    ax1.set_title("Rare words shatter")
    width = 0.4
    for k, (name, counts) in enumerate(results["number_patterns"].items()):
        total = sum(counts.values())
        keys = list(results["number_patterns"]["gpt2"])[:6]
        ax2.bar(np.arange(len(keys)) + (k - 0.5) * width,
                [counts.get(p, 0) / total for p in keys], width=width, color=PALETTE[k + 1],
                label=f"{name} pre-tokenizer")
    ax2.set_xticks(range(len(keys)), keys)
    ax2.set_xlabel("digits per token of a 4-digit number")
    ax2.set_ylabel("share of held-out numbers")
    ax2.set_title("One place value, many cuts")
    ax2.legend(fontsize=8)
    return {"pathologies": fig}


def check(results: dict[str, Any]) -> None:
    rare = [results["rare_words"][label]["mean"] for _, _, label in BINS]
    assert all(a > b for a, b in zip(rare, rare[1:])), rare  # rarer words, more tokens
    v = results["variants"]
    assert v["␣word"]["mean"] < v["word"]["mean"] < v["WORD"]["mean"], v  # space and case
    c = results["case_bytes_per_token"]
    assert c["UPPER"]["mean"] < 0.75 * c["original"]["mean"], c  # upper case compresses badly
    n = results["numbers"]
    assert n["gpt2"]["n_patterns"]["mean"] >= 3  # a 4-digit number is cut several ways


EXPERIMENT = Experiment(
    name="tokenization_pathologies", stage=10, title="Pathologies: numbers, rare words, case",
    quick=Config(vocab_size=1024, arithmetic_lines=4000, held_out_numbers=500,
                 max_train_chars=200_000, max_val_chars=50_000),
    full=Config(),
    run=run, plot=plot, check=check,
    summary=lambda r: [(k, f"{d['tokens_per_number']['mean']:.2f} tok/number")
                       for k, d in r["numbers"].items()],
    description="how numbers, rare words, whitespace and case tokenize",
)
