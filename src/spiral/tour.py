"""``spiral tour``: the curriculum's ladder of models, trained and scored by one evaluator.

Every rung is trained on a corpus's training split and scored by :func:`spiral.evaluate.evaluate`
on the same validation split (every position scored), from the uniform distribution through
n-grams and the MLP to the GPT. The report (:mod:`spiral.tour_report`) gives each rung's
settings, time and a sample, as Markdown and as a self-contained HTML page with the
leaderboard drawn as a figure.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral import data
from spiral.evaluate import evaluate
from spiral.tokenizers.char import CharTokenizer

DEFAULT_CORPORA = ("names", "shakespeare")


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
    # (corpus, train text, |V|, rng, progress) -> a trained model
    build: Callable[[str, str, int, np.random.Generator, bool], Any]
    settings: str = ""
    corpora: tuple[str, ...] | None = None  # None: every corpus


class ByteModelOnCharIds:
    """A byte-level model scored on a character tokenizer's ids (ASCII text: one byte per
    character, so nats per byte are nats per character): ids are mapped to bytes."""

    def __init__(self, model: Any, itos: list[str], n_parameters: int | None = None) -> None:
        if any(ord(c) > 127 for c in itos):
            raise ValueError("a byte-level model can be scored on character ids only for "
                             "ASCII text")
        self.model, self.itos = model, itos
        self.n_parameters = n_parameters  # a quantized model's weights are buffers, not params
        self.table = np.array([ord(c) for c in itos], dtype=np.int64)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    def window_nll(self, windows: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.window_nll(self.table[windows]))

    def num_parameters(self) -> int:
        if self.n_parameters is not None:
            return self.n_parameters
        return int(self.model.num_parameters())

    def generate(self, n: int, rng: np.random.Generator) -> str:
        from spiral.generate import generate

        ids = generate(self.model, [ord("\n")], n, rng)
        return bytes(ids).decode("ascii", errors="replace")


def _ngram(order: int, smoothing: str) -> Rung:
    from spiral.ngram import NGramLM

    names = {1: "unigram", 2: "bigram", 3: "trigram"}
    if smoothing == "laplace":
        label, settings = f"{names[order]} (add-1)", f"order {order}, add-one (Laplace) smoothing"
    else:
        discount = inspect.signature(NGramLM).parameters["discount"].default
        label = f"{names.get(order, f'{order}-gram')} Kneser-Ney"
        settings = f"order {order}, interpolated Kneser-Ney, discount {discount}"

    def build(corpus: str, train: str, vocab_size: int, rng: np.random.Generator,
              progress: bool) -> Any:
        # Fitted on the text; its ids are CharTokenizer.from_text(train)'s (sorted chars).
        return NGramLM(order, smoothing=smoothing).fit(train)

    return Rung(label, 1, build, settings)


def _mlp(quick: bool) -> Rung:
    from spiral.models.mlp import MLPConfig
    from spiral.recipes.mlp import fit_text
    from spiral.train import TrainConfig

    over: dict[str, Any] = {"max_steps": 300, "eval_interval": 300} if quick else {}
    m, t = MLPConfig(vocab_size=1), TrainConfig(**over)
    settings = (f"stage 4's recipe: context {m.n_context}, embedding {m.d_embed}, "
                f"{m.n_layers} hidden layers of {m.d_hidden} ({m.activation}); AdamW lr {t.lr}, "
                f"{t.max_steps} steps of {t.batch_size} windows × {t.seq_len} characters")

    def build(corpus: str, train: str, vocab_size: int, rng: np.random.Generator,
              progress: bool) -> Any:
        return fit_text(train, rng, train_overrides={**over, "progress": progress})

    label = "MLP (stage 4 recipe)" + (f", {t.max_steps} steps" if quick else "")
    return Rung(label, 4, build, settings)


def _gpt(quick: bool) -> Rung:
    from spiral.models.gpt import GPTConfig
    from spiral.recipes.gpt import RECIPES, train_gpt

    over: dict[str, Any] = ({"max_steps": 40, "eval_interval": 40, "warmup_steps": 10}
                            if quick else {})
    m, r = GPTConfig.preset("baby", 1), {**RECIPES["baby"], **over}
    settings = (f"nanoGPT's baby recipe (stage 8): {m.n_layers} layers × {m.d_model} wide, "
                f"{m.n_heads} heads, context {m.context_length}, dropout {m.dropout}; AdamW lr "
                f"{r['lr']}, {r['max_steps']} steps of {r['batch_size']} windows × "
                f"{m.context_length} characters")

    def build(corpus: str, train: str, vocab_size: int, rng: np.random.Generator,
              progress: bool) -> Any:
        seed = int(rng.integers(1 << 31))
        # the recipe reads the corpus's fixed split itself (same training text as the others)
        return train_gpt(corpus, preset="baby", seed=seed, train_overrides=over or None,
                         progress=progress)["model"]

    label = "GPT baby (stage 8 recipe)" + (f", {r['max_steps']} steps" if quick else "")
    return Rung(label, 8, build, settings)


def _pretrained(name: str) -> Rung:
    def build(corpus: str, train: str, vocab_size: int, rng: np.random.Generator,
              progress: bool) -> Any:
        from spiral.models.pretrained import load_pretrained

        tok = CharTokenizer.from_text(train)
        return ByteModelOnCharIds(load_pretrained(name).model, list(tok.itos))

    settings = (f"the book's pretrained model '{name}' (stage 14), loaded checksum-verified "
                "from models/, not trained here; its record is models/" + name +
                "/training.json")
    return Rung("the book's model (stage 14, pretrained)", 14, build, settings,
                corpora=("shakespeare",))


def _finetuned(name: str, quick: bool) -> Rung:
    """The book's model adapted to names with LoRA (stage 15's method and chosen rate)."""
    steps, lr, r = (20 if quick else 200), 1e-2, 8
    settings = (f"the book's model '{name}' fine-tuned on the names training split (stage 15): "
                f"LoRA r = {r}, alpha 16, on every linear layer; AdamW lr {lr:g}, {steps} steps "
                "of 16 × 64 bytes, the rate finetune_methods chose on validation")

    def build(corpus: str, train: str, vocab_size: int, rng: np.random.Generator,
              progress: bool) -> Any:
        from types import SimpleNamespace

        from spiral.finetune.lora import merge_lora
        from spiral.finetune.recipe import FinetuneConfig, finetune, load_base
        from spiral.train import TrainConfig

        base = load_base(name)
        splits = SimpleNamespace(name=corpus, train=train, val=data.get_splits(corpus).val)
        tc = TrainConfig(max_steps=steps, batch_size=16, seq_len=64, lr=lr,
                         warmup_steps=min(20, steps // 4), weight_decay=0.0,
                         eval_interval=steps, eval_tokens=4096,
                         seed=int(rng.integers(1 << 31)), progress=progress)
        finetune(base, splits, FinetuneConfig("lora", r=r, lora_alpha=16.0), tc)
        merge_lora(base.model)  # the same function, at the base's cost per token
        return ByteModelOnCharIds(base.model, list(CharTokenizer.from_text(train).itos))

    return Rung(f"the book's model + LoRA on names (stage 15, {steps} steps)", 15, build,
                settings, corpora=("names",))


def _quantized(name: str) -> Rung:
    """The book's model with INT4 weights (stage 18's round-to-nearest, groups of 64)."""
    settings = (f"the book's model '{name}' with every linear layer's weights rounded to INT4 "
                "(symmetric, one scale per group of 64 inputs; stage 18), embeddings and "
                "norms in float32; no calibration data, no training")

    def build(corpus: str, train: str, vocab_size: int, rng: np.random.Generator,
              progress: bool) -> Any:
        from spiral.models.pretrained import load_pretrained
        from spiral.quant.linear import quantize_model

        model = load_pretrained(name).model
        n = int(model.num_parameters())  # the same weights, now stored as 4-bit codes
        quantize_model(model, bits=4, granularity="group", group_size=64)
        return ByteModelOnCharIds(model, list(CharTokenizer.from_text(train).itos), n)

    return Rung("the book's model, INT4 weights (stage 18)", 18, build, settings,
                corpora=("shakespeare",))


def ladder(quick: bool) -> list[Rung]:
    """The rungs, cheapest first; ``quick`` drops the slow ones and shortens the training."""
    rungs = [Rung("uniform over the vocabulary", 1,
                  lambda c, tr, v, rng, p: UniformModel(v), "p = 1/V for each training character")]
    rungs += [_ngram(1, "laplace"), _ngram(2, "laplace"), _ngram(3, "kneser_ney")]
    if not quick:
        rungs += [_ngram(5, "kneser_ney"), _ngram(6, "kneser_ney")]
    rungs += [_mlp(quick), _gpt(quick)]
    from spiral.models.pretrained import BOOK_MODEL

    rungs += [_pretrained(BOOK_MODEL), _finetuned(BOOK_MODEL, quick), _quantized(BOOK_MODEL)]
    return rungs


def _params(model: Any) -> int | None:
    f = getattr(model, "num_parameters", None)
    return int(f()) if callable(f) else None


def _sample(model: Any, tok: CharTokenizer, rng: np.random.Generator, n: int) -> str:
    """``n`` characters sampled from the model (counting models sample themselves)."""
    if isinstance(model, UniformModel):
        return tok.decode(model.sample(n, rng))
    if hasattr(model, "generate"):
        ids = model.generate(n, rng=rng)
        return ids[:n] if isinstance(ids, str) else tok.decode(ids)
    from spiral.generate import sample_text

    prompt = "\n" if "\n" in tok.stoi else tok.itos[0]
    return sample_text(model, tok, rng, prompt=prompt, names=False, max_new_tokens=n)[1:]


def run_tour(quick: bool = False, out: Path | None = None, seed: int = 0,
             corpora: tuple[str, ...] = DEFAULT_CORPORA, progress: bool = True) -> dict[str, Any]:
    """Train and score every rung on each corpus; print the leaderboard and write the report."""
    from tqdm import tqdm

    from spiral.records import git_sha
    from spiral.tour_report import format_leaderboard, write_report

    rungs = ladder(quick)
    checked = []
    for corpus in corpora:  # every corpus is checked before the first model trains
        splits = data.get_splits(corpus)
        data.check_char_corpus(splits, 64)
        checked.append((corpus, splits))
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    def applies(rung: Rung, name: str) -> bool:
        return rung.corpora is None or name in rung.corpora

    total = sum(applies(r, s.name) for _, s in checked for r in rungs)
    with tqdm(total=total, desc="spiral tour", unit="model",
              disable=not progress, position=0) as bar:
        for corpus, splits in checked:
            tok = CharTokenizer.from_text(splits.train)  # V = the training characters
            val_ids = tok.encode_array(splits.val)
            if quick:
                val_ids = val_ids[:20_000]
            for rung in (r for r in rungs if applies(r, splits.name)):
                bar.set_postfix_str(f"{splits.name}: {rung.label}")
                rng = np.random.default_rng(seed)
                t0 = time.perf_counter()
                model = rung.build(corpus, splits.train, tok.vocab_size, rng, progress)
                train_s = time.perf_counter() - t0
                res = evaluate(model, val_ids)
                sample = _sample(model, tok, rng, 200 if splits.name != "names" else 120)
                rows.append({
                    "corpus": splits.name, "model": rung.label, "stage": rung.stage,
                    "settings": rung.settings, "parameters": _params(model),
                    "val_nats": res.nats, "val_bits": res.bits, "perplexity": res.perplexity,
                    "train_s": train_s, "n_tokens": res.n_tokens, "sample": sample,
                })
                bar.update()
    report = {"quick": quick, "seed": seed, "git_sha": git_sha(),
              "wall_s": time.perf_counter() - t_start, "rows": rows}
    print(format_leaderboard(rows))
    if out is not None:
        paths = write_report(report, Path(out))
        print(f"\nreport written to {paths['html']} (and {paths['md'].name}, "
              f"{paths['json'].name})")
    return report
