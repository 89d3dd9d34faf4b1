"""Hugging Face checkpoints on our engine: logits, round trips, tokenizer ids, a sample.

For each configuration ``transformers`` builds a small model with random weights (seeded),
saves it, and :func:`spiral.hub.load_model` reads the folder; we report the largest logit
difference relative to the logits' scale, max|ours − theirs| / max|theirs|, in float32, over
seeds: GPT-2 (tied and untied), Llama with grouped-query attention (untied), multi-query
attention (tied), RoPE bases 10⁴ and 5·10⁵, and Llama 3's RoPE scaling. The round trips
export our own models (the book's GPT-2-style baby, its Llama-style twin) and load them in
``transformers``. The tokenizer part trains Hugging Face's byte-level BPE on tiny
Shakespeare and compares ids. Last, the text ``spiral.hub.sample`` prints for a random
(untrained!) GPT-2-shaped folder: what the command prints, not what GPT-2 would say.
Chapter: stage 8, "Running real pretrained weights on your engine".
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spiral.experiments.framework import Experiment, mean_sd

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2_tied": ("gpt2", {}),
    "gpt2_untied": ("gpt2", {"tie_word_embeddings": False}),
    "llama_gqa": ("llama", {"num_key_value_heads": 2}),
    "llama_mqa_tied": ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": True}),
    "llama_theta_5e5": ("llama", {"num_key_value_heads": 2, "rope_theta": 5e5}),
    "llama3_scaling": ("llama", {"num_key_value_heads": 2, "rope_theta": 5e5,
                                 "rope_scaling": LLAMA3}),
}


@dataclass(frozen=True)
class Config:
    seeds: tuple[int, ...] = (0, 1, 2)
    d_model: int = 64
    n_layers: int = 2
    seq_len: int = 64
    text_chars: int = 0      # 0 = all of tiny Shakespeare
    tokenizer_vocab: int = 1000


def _hf_model(kind: str, cfg: dict[str, Any], c: Config, seed: int) -> Any:
    import transformers

    transformers.set_seed(seed)  # seeds torch (and NumPy) for the random initialization
    if kind == "gpt2":
        gconf = transformers.GPT2Config(vocab_size=97, n_positions=c.seq_len, n_embd=c.d_model,
                                        n_layer=c.n_layers, n_head=4, initializer_range=0.2,
                                        bos_token_id=0, eos_token_id=0, **cfg)
        return transformers.GPT2LMHeadModel(gconf).eval()
    conf = transformers.LlamaConfig(vocab_size=97, hidden_size=c.d_model, num_attention_heads=4,
                                    intermediate_size=2 * c.d_model, num_hidden_layers=c.n_layers,
                                    max_position_embeddings=c.seq_len, initializer_range=0.2,
                                    **{**cfg, "rope_scaling": dict(cfg.get("rope_scaling") or {})
                                       or None})
    return transformers.LlamaForCausalLM(conf).eval()


def _logits(hf: Any, ids: np.ndarray) -> np.ndarray:
    """transformers' logits; the id tensor is made by the model's own weight (no torch import
    here: the library's only torch-importing modules are declared in one place)."""
    t = hf.get_input_embeddings().weight.new_tensor(ids, dtype=None).long()
    return hf(input_ids=t).logits.detach().numpy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _round_trip(preset: str, family: str, seed: int, tmp: Path) -> float:
    import transformers

    from spiral.hub import export
    from spiral.models.gpt import GPT, GPTConfig

    ours = GPT(GPTConfig.preset(preset, vocab_size=97), rng=np.random.default_rng(seed))
    export(ours, tmp / f"{preset}-{seed}", family=family)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp / f"{preset}-{seed}")
    ids = np.random.default_rng(seed).integers(0, 97, (2, 64))
    return _rel(_logits(theirs, ids), ours(ids).data)


def _tokenizer(c: Config, tmp: Path) -> dict[str, Any]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from spiral import data
    from spiral.hub import load_hf_tokenizer

    text = data.load_text("shakespeare")
    text = text[: c.text_chars] if c.text_chars else text
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=c.tokenizer_vocab, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp / "tokenizer.json"))
    theirs = tok.encode(text).ids
    ours = load_hf_tokenizer(tmp / "tokenizer.json").encode(text)
    return {"chars": len(text), "tokens_hf": len(theirs), "tokens_ours": len(ours),
            "ids_equal": ours == theirs, "path": str(tmp / "tokenizer.json")}


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    from spiral import hub
    from spiral.models.gpt import GPT, GPTConfig

    out: dict[str, Any] = {"logits": {}, "round_trip": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, (kind, cfg) in CASES.items():
            errs = []
            for seed in config.seeds:
                hf = _hf_model(kind, cfg, config, seed)
                hf.save_pretrained(tmp / f"{name}-{seed}")
                ours = hub.load_model(tmp / f"{name}-{seed}")
                ids = np.random.default_rng(seed).integers(0, 97, (2, config.seq_len))
                errs.append(_rel(ours(ids).data, _logits(hf, ids)))
            out["logits"][name] = mean_sd(errs)
        for preset, family in (("gpt2-baby", "gpt2"), ("llama-baby", "llama")):
            out["round_trip"][preset] = mean_sd([_round_trip(preset, family, s, tmp)
                                                 for s in config.seeds])
        out["tokenizer"] = tok = _tokenizer(config, tmp)
        demo = GPT(GPTConfig(vocab_size=config.tokenizer_vocab, context_length=64, n_layers=2,
                             n_heads=4, d_model=64, bias=True, gelu_approximate="tanh"),
                   rng=np.random.default_rng(0))
        folder = hub.export(demo, tmp / "demo", family="gpt2", tokenizer_json=tok.pop("path"))
        out["demo_sample"] = hub.sample(folder, "ROMEO:", max_new_tokens=12, seed=0)
    worst = max(max(v["values"]) for v in
                [*out["logits"].values(), *out["round_trip"].values()])
    out["worst_rel_err"] = worst
    out["seeds"] = list(config.seeds)
    out["table"] = {"columns": ["configuration", "max |Δlogit| / max |logit| (mean ± sd)"],
                    "rows": [[k, f"{v['mean']:.1e} ± {v['sd']:.1e}"] for k, v in
                             [*out["logits"].items(),
                              *((f"round trip {p}", v) for p, v in out["round_trip"].items())]]}
    return out


def plot(results: dict[str, Any]) -> dict[str, Any]:
    from spiral.plotting import PALETTE, new_figure

    rows = [*results["logits"].items(),
            *((f"round trip {k}", v) for k, v in results["round_trip"].items())]
    fig, ax = new_figure(width=6.4, height=3.4)
    names = [k.replace("_", " ") for k, _ in rows]
    for i, (_, v) in enumerate(rows):  # every seed's value, and the mean as a bar
        ax.barh(i, v["mean"], color=PALETTE[0 if i < len(results["logits"]) else 1])
        ax.plot(v["values"], [i] * len(v["values"]), "o", color="black", ms=3)
    ax.axvline(1e-5, color=PALETTE[3], ls="--", label="target 10⁻⁵")
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("max |Δlogit| / max |logit|, float32 (dots: seeds)")
    ax.legend(loc="lower right")
    return {"parity": fig}


def check(results: dict[str, Any]) -> None:
    assert results["worst_rel_err"] < 1e-5, results["worst_rel_err"]
    assert results["tokenizer"]["ids_equal"], results["tokenizer"]
    assert results["demo_sample"].startswith("ROMEO:")


EXPERIMENT = Experiment(
    name="hub_parity", stage=8, title="Hugging Face checkpoints on our engine",
    quick=Config(seeds=(0,), d_model=32, seq_len=32, text_chars=20_000, tokenizer_vocab=400),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("worst relative logit error", f"{r['worst_rel_err']:.1e}"),
                       ("tokenizer ids equal", r["tokenizer"]["ids_equal"])],
)
