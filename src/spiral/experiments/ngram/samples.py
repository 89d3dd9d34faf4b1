"""The sample ladder: text drawn from n-gram models of order 1, 2, 3, 5 and 8, and the
effect of the sampling temperature.

Low orders babble letter soup; order 3 makes word-like strings; order 5 makes words and
punctuation in Shakespeare's layout; order 8 starts to copy the training text verbatim. We
measure that copying (the share of sampled 10-character strings that occur in training; for
names, the share of sampled names that are training names) over three sampling seeds.
Temperature T samples from P^(1/T): below 1 the text grows repetitive, above 1 noisy.
Chapter: stages/stage-01-ngrams ("Generation is sampling").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd
from spiral.experiments.ngram import corpora as nc
from spiral.ngram import NGramLM, window_codes
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    orders: tuple[int, ...] = (1, 2, 3, 5, 8)
    temperatures: tuple[float, ...] = (0.5, 0.8, 1.0, 1.5)
    temperature_order: int = 5
    n_chars: int = 400
    n_names: int = 200
    copy_len: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)  # sampling seeds
    discount: float = 0.75


def _copy_fraction(lm: NGramLM, train_codes: np.ndarray, text: str, m: int) -> float:
    codes = window_codes(lm.encode(text), m, lm.vocab_size)
    if not len(codes):
        return 0.0
    pos = np.minimum(np.searchsorted(train_codes, codes), len(train_codes) - 1)
    return float(np.mean(train_codes[pos] == codes))  # train_codes is sorted and distinct


def _block(text: str) -> str:
    """A sample as a fenced Markdown block, so a chapter macro can show it verbatim."""
    return "```text\n" + text + "\n```"


def _names(lm: NGramLM, n: int, rng: np.random.Generator) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        out += str(lm.generate(20 * n, rng=rng)).split("\n")[:-1]
    return out[:n]


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    sh = nc.load("shakespeare")
    names = nc.load("names")
    train_names = set(names.train)
    res: dict[str, Any] = {"shakespeare": {}, "names": {}, "temperature": {}}
    rows = []
    train_codes_cache: dict[str, np.ndarray] = {}
    for n in sorted(set(config.orders) | {config.temperature_order}):
        lm = NGramLM(n, "kneser_ney", discount=config.discount).fit(sh.train)
        if "codes" not in train_codes_cache:
            train_codes_cache["codes"] = np.unique(
                window_codes(lm.encode(sh.train), config.copy_len, lm.vocab_size))
        codes = train_codes_cache["codes"]
        seeds = [np.random.default_rng(s) for s in config.seeds]
        if n in config.orders:
            texts = [str(lm.generate(config.n_chars, rng=r, prompt="\n")) for r in seeds]
            copy = mean_sd([_copy_fraction(lm, codes, t, config.copy_len) for t in texts])
            nlm = NGramLM(n, "kneser_ney", discount=config.discount).fit(names.train)
            made = [_names(nlm, config.n_names, np.random.default_rng(s)) for s in config.seeds]
            in_train = mean_sd([np.mean([m in train_names for m in ms]) for ms in made])
            mean_len = mean_sd([np.mean([len(m) for m in ms]) for ms in made])
            res["shakespeare"][f"order_{n}"] = {"sample": texts[0][:300],
                                                "block": _block(texts[0][:300]),
                                                "copy_fraction": copy}
            res["names"][f"order_{n}"] = {"sample": ", ".join(made[0][:12]),
                                          "in_train_fraction": in_train, "mean_length": mean_len}
            rows.append([n, f"{copy['mean']:.1%} ± {copy['sd']:.1%}",
                         f"{in_train['mean']:.1%} ± {in_train['sd']:.1%}",
                         f"{mean_len['mean']:.2f}"])
        if n == config.temperature_order:
            for t in config.temperatures:
                texts = [str(lm.generate(config.n_chars, rng=np.random.default_rng(s),
                                         temperature=t, prompt="\n")) for s in config.seeds]
                res["temperature"][f"t{round(t * 100):03d}"] = {
                    "temperature": t,
                    "sample": texts[0][:300],
                    "block": _block(texts[0][:300]),
                    "self_nll": mean_sd([lm.cross_entropy(x) for x in texts]),
                    "copy_fraction": mean_sd(
                        [_copy_fraction(lm, codes, x, config.copy_len) for x in texts]),
                }
    res["names"]["real_mean_length"] = float(np.mean([len(x) for x in names.train]))
    res["table"] = {"columns": ["order", f"sampled {config.copy_len}-char strings found in "
                                "training", "sampled names that are training names",
                                "mean name length"], "rows": rows}
    res["orders"] = list(config.orders)
    return res


def plot(results: dict[str, Any]) -> dict[str, Any]:
    fig, axes = new_figure(1, 2, width=8.0, height=3.2)
    orders = results["orders"]
    sh = [results["shakespeare"][f"order_{n}"]["copy_fraction"]["mean"] for n in orders]
    nm = [results["names"][f"order_{n}"]["in_train_fraction"]["mean"] for n in orders]
    axes[0].plot(orders, sh, marker="o", color=PALETTE[0])
    direct_label(axes[0], orders, sh, "Shakespeare: 10-char strings", color=PALETTE[0])
    axes[0].plot(orders, nm, marker="o", color=PALETTE[1])
    direct_label(axes[0], orders, nm, "names: whole names", color=PALETTE[1])
    axes[0].set_xlabel("order n")
    axes[0].set_ylabel("fraction found in training")
    axes[0].set_title("higher orders copy their training text", loc="left")
    axes[0].set_xlim(min(orders) - 0.3, max(orders) + 4)
    axes[0].set_ylim(0, 1)
    temps = sorted(results["temperature"].values(), key=lambda r: r["temperature"])
    ts = [r["temperature"] for r in temps]
    nll = [r["self_nll"]["mean"] for r in temps]
    axes[1].plot(ts, nll, marker="o", color=PALETTE[2])
    axes[1].set_xlabel("temperature T")
    axes[1].set_ylabel("model's own NLL of its sample (nats/char)")
    axes[1].set_title("temperature trades repetition for noise", loc="left")
    return {"sample_ladder": fig}


def check(results: dict[str, Any]) -> None:
    orders = results["orders"]
    copy = [results["shakespeare"][f"order_{n}"]["copy_fraction"]["mean"] for n in orders]
    assert copy[-1] > copy[0], "higher orders copy more of the training text"
    temps = sorted(results["temperature"].values(), key=lambda r: r["temperature"])
    nll = [r["self_nll"]["mean"] for r in temps]
    assert all(a < b for a, b in zip(nll, nll[1:])), "hotter samples are less likely"


EXPERIMENT = Experiment(
    name="ngram_samples",
    stage=1,
    title="Sample ladder and temperature",
    quick=Config(orders=(1, 3, 5), temperatures=(0.5, 1.0, 1.5), temperature_order=3,
                 n_chars=150, n_names=30, seeds=(0,)),
    full=Config(),
    run=run,
    plot=plot,
    check=check,
    summary=lambda r: [
        (f"order {n} copy", f"{r['shakespeare'][f'order_{n}']['copy_fraction']['mean']:.1%}")
        for n in r["orders"]
    ],
)
