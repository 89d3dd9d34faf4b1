"""``spiral tour``: the curriculum's ladder of models, scored by one evaluator.

Each rung is trained on the training split of a corpus and scored by
:func:`spiral.evaluate.evaluate` on the same validation split, so the leaderboard compares
like with like: nats and bits per character, parameters, training time and a sample. The
ladder grows as stages land (n-grams from stage 1; the MLP and the GPT later).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral import data
from spiral.evaluate import evaluate
from spiral.experiments.framework import atomic_write_text, git_sha
from spiral.tokenizers.char import CharTokenizer


class UniformModel:
    """The rung below every model: each of the V symbols with probability 1/V."""

    def __init__(self, vocab_size: int, context_length: int = 256) -> None:
        self.vocab_size = vocab_size
        self.context_length = context_length

    def window_nll(self, windows: np.ndarray) -> np.ndarray:
        b, l = windows.shape
        return np.full((b, l - 1), math.log(self.vocab_size))

    def num_parameters(self) -> int:
        return 0

    def sample(self, n: int, rng: np.random.Generator) -> list[int]:
        return rng.integers(0, self.vocab_size, size=n).tolist()


@dataclass(frozen=True)
class Rung:
    label: str
    stage: int
    build: Callable[..., Any]  # (train text, |V|, rng[, corpus=]) -> a trained model


def _ngram(order: int, smoothing: str, **kw: Any) -> Callable[..., Any]:
    def build(train: str, vocab_size: int, rng: np.random.Generator) -> Any:
        from spiral.ngram import NGramLM

        # Fitted on the text, its ids are CharTokenizer.from_text(train)'s (sorted chars).
        return NGramLM(order, smoothing=smoothing, **kw).fit(train)

    return build


def _mlp(quick: bool) -> Callable[..., Any]:
    def build(train: str, vocab_size: int, rng: np.random.Generator) -> Any:
        from spiral.train_cli import fit_text

        # the stage-4 default recipe; --quick trains it briefly (a smoke rung, not a result)
        over = {"max_steps": 300, "eval_interval": 300} if quick else None
        return fit_text(train, rng, train_overrides=over)

    return build


def _gpt(quick: bool) -> Callable[..., Any]:
    def build(train: str, vocab_size: int, rng: np.random.Generator, corpus: str = "") -> Any:
        from spiral.experiments.transformer_recipe import train_gpt

        # nanoGPT's "baby" CPU recipe (stage 8); --quick trains it briefly (a smoke rung)
        over = {"max_steps": 40, "eval_interval": 40, "warmup_steps": 10} if quick else None
        seed = int(rng.integers(1 << 31))
        return train_gpt(corpus, preset="baby", seed=seed, train_overrides=over,
                         progress=False)["model"]

    return build


def ladder(quick: bool) -> list[Rung]:
    rungs = [Rung("uniform over the vocabulary", 1,
                  lambda tr, v, rng: UniformModel(v))]
    try:
        import spiral.ngram  # noqa: F401
    except ModuleNotFoundError:
        return rungs
    rungs += [
        Rung("unigram (add-1)", 1, _ngram(1, "laplace")),
        Rung("bigram (add-1)", 1, _ngram(2, "laplace")),
        Rung("trigram Kneser-Ney", 1, _ngram(3, "kneser_ney")),
    ]
    if not quick:
        rungs += [
            Rung("5-gram Kneser-Ney", 1, _ngram(5, "kneser_ney")),
            Rung("6-gram Kneser-Ney", 1, _ngram(6, "kneser_ney")),
        ]
    try:
        import spiral.train_cli  # noqa: F401
    except ModuleNotFoundError:
        return rungs
    rungs.append(Rung("MLP (stage 4 recipe)" + (", 300 steps" if quick else ""), 4, _mlp(quick)))
    try:
        import spiral.experiments.transformer_recipe  # noqa: F401
    except ModuleNotFoundError:
        return rungs
    rungs.append(Rung("GPT baby (stage 8 recipe)" + (", 40 steps" if quick else ""), 8,
                      _gpt(quick)))
    return rungs


def _params(model: Any) -> int | None:
    f = getattr(model, "num_parameters", None)
    return int(f()) if callable(f) else None


def _generate_chars(model: Any, tok: CharTokenizer, rng: np.random.Generator, n: int) -> str:
    """Sample from a neural model through the shared sampler (spiral.generate)."""
    from spiral.train_cli import sample_text

    prompt = "\n" if "\n" in tok.stoi else tok.itos[0]
    text = sample_text(model, tok, rng, prompt=prompt, names=False, max_new_tokens=n)
    return str(text)[len(prompt):]


def _sample(model: Any, tok: CharTokenizer, rng: np.random.Generator, n: int) -> str:
    try:
        if isinstance(model, UniformModel):
            ids = model.sample(n, rng)
        elif hasattr(model, "generate"):  # counting models sample themselves
            ids = model.generate(n, rng=rng)
        else:  # neural models go through the shared sampler
            return _generate_chars(model, tok, rng, n)
        if isinstance(ids, str):
            return ids[:n]
        return tok.decode(ids)
    except (AttributeError, TypeError):
        return ""


def run_tour(quick: bool = False, out: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Train and score every rung on both corpora; print and save the leaderboard."""
    from tqdm import tqdm

    corpora = ["names", "shakespeare"]
    rows: list[dict[str, Any]] = []
    rungs = ladder(quick)
    bar = tqdm(total=len(corpora) * len(rungs), desc="spiral tour", unit="model")
    for corpus in corpora:
        splits = data.get_splits(corpus)
        tok = CharTokenizer.from_text(splits.train)  # V = the training characters
        val_ids = tok.encode_array(splits.val)
        if quick:
            val_ids = val_ids[:20_000]
        for rung in rungs:
            rng = np.random.default_rng(seed)
            t0 = time.perf_counter()
            if rung.stage == 8:  # the GPT recipe reads the corpus's fixed split itself
                model = rung.build(splits.train, tok.vocab_size, rng, corpus=corpus)
            else:
                model = rung.build(splits.train, tok.vocab_size, rng)
            train_s = time.perf_counter() - t0
            res = evaluate(model, val_ids)
            sample = _sample(model, tok, rng, 80 if corpus == "shakespeare" else 60)
            rows.append({
                "corpus": corpus, "model": rung.label, "stage": rung.stage,
                "parameters": _params(model), "val_nats": res.nats, "val_bits": res.bits,
                "perplexity": res.perplexity, "train_s": train_s, "n_tokens": res.n_tokens,
                "sample": sample,
            })
            bar.update()
    bar.close()
    report = {"quick": quick, "seed": seed, "git_sha": git_sha(), "rows": rows}
    text = format_leaderboard(rows)
    print(text)
    if out is not None:
        atomic_write_text(Path(out) / "tour.json", json.dumps(report, indent=1) + "\n")
        atomic_write_text(Path(out) / "tour.md", "# spiral tour\n\n" + text + "\n")
        print(f"\nreport written to {Path(out) / 'tour.md'}")
    return report


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
    out = []
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        sub = sorted((r for r in rows if r["corpus"] == corpus), key=lambda r: r["val_nats"])
        out.append(f"\n## {corpus} (validation split, every position scored)\n")
        out.append("| model | parameters | nats/char | bits/char | train s | sample |")
        out.append("|---|---:|---:|---:|---:|---|")
        for r in sub:
            params = "-" if r["parameters"] is None else f"{r['parameters']:,}"
            sample = r["sample"].replace("\n", "⏎").replace("|", "¦")[:60]
            out.append(
                f"| {r['model']} | {params} | {r['val_nats']:.4f} | {r['val_bits']:.4f} | "
                f"{r['train_s']:.2f} | `{sample}` |"
            )
    return "\n".join(out)
