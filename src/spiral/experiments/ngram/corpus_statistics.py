"""Corpus statistics: sizes, vocabularies, duplicates and the leak in makemore's split.

Every number the book states about its data comes from here: characters per split, the
character vocabulary, how many of names.txt's lines are duplicates, and how many
validation names a split without deduplication shares with training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral import data
from spiral.experiments.framework import Experiment
from spiral.plotting import new_figure


@dataclass(frozen=True)
class Config:
    corpora: tuple[str, ...] = ("shakespeare", "names")
    top_chars: int = 20


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in config.corpora:
        text = data.load_text(name)
        s = data.get_splits(name)
        counts = Counter(s.train)
        out[name] = {
            "characters": len(text),
            "vocab_size": len(set(text)),
            "train_chars": len(s.train),
            "val_chars": len(s.val),
            "test_chars": len(s.test) if s.test is not None else None,
            "val_chars_unseen_in_train": sum(1 for c in s.val if c not in counts),
            "top_chars": [[c, n] for c, n in counts.most_common(config.top_chars)],
        }
    if "names" in config.corpora:
        raw = data.parse_names(data.load_text("names"))
        ns = data.names_splits()
        mm = data.names_makemore_split()
        leaked = len([n for n in mm.val if n in set(mm.train)])
        out["names"].update({
            "lines": len(raw),
            "distinct": len(set(raw)),
            "duplicates": len(raw) - len(set(raw)),
            "split_sizes": [len(ns.train), len(ns.val), len(ns.test)],
            "makemore_val": len(mm.val),
            "makemore_val_leaked": leaked,
            "makemore_leak_fraction": leaked / len(mm.val),
            "ours_val_leaked": len(set(ns.val) & set(ns.train)),
            "mean_name_length": float(np.mean([len(n) for n in raw])),
        })
    out["table"] = {
        "columns": ["corpus", "characters", "vocabulary", "train", "validation", "test"],
        "rows": [
            [n, out[n]["characters"], out[n]["vocab_size"], out[n]["train_chars"],
             out[n]["val_chars"], out[n]["test_chars"]]
            for n in config.corpora
        ],
    }
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    figs = {}
    names = [n for n in ("shakespeare", "names") if n in results]
    fig, axes = new_figure(1, len(names), width=7.0, height=3.0)
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names):
        top = results[name]["top_chars"]
        labels = [{" ": "space", "\n": "newline"}.get(c, c) for c, _ in top]
        total = results[name]["train_chars"]
        ax.barh(range(len(top))[::-1], [n / total for _, n in top], color="#1f4e79")
        ax.set_yticks(range(len(top))[::-1], labels)
        ax.set_xlabel("share of training characters")
        ax.set_title(f"{name}: most frequent characters", loc="left")
    figs["character_frequencies"] = fig
    return figs


def check(results: dict[str, Any]) -> None:
    if "names" in results:
        r = results["names"]
        assert r["duplicates"] > 2000, "names.txt should hold about 2,500 duplicate lines"
        assert 0.10 < r["makemore_leak_fraction"] < 0.16, "makemore's split leaks ~13 %"
        assert r["ours_val_leaked"] == 0, "the deduplicated split must not leak"
    if "shakespeare" in results:
        r = results["shakespeare"]
        assert r["train_chars"] + r["val_chars"] == r["characters"]


EXPERIMENT = Experiment(
    name="corpus_statistics",
    stage=1,
    title="The corpora and their splits",
    quick=Config(),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [("names duplicates", r["names"]["duplicates"]),
                       ("makemore leak", f"{r['names']['makemore_leak_fraction']:.1%}")],
)
