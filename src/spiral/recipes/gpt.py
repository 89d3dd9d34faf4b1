"""nanoGPT's CPU recipe for the baby GPT, on the shared training loop (``spiral train gpt``).

The recipe (Karpathy's nanoGPT README, "baby GPT" on a CPU): 4 layers, 4 heads, d_model
128, context 64, no biases, tied embeddings, no dropout, batch 12, 2000 iterations, AdamW
(β = 0.9, 0.99; weight decay 0.1 on ≥ 2-D tensors only), lr 1e-3 with 100 linear warm-up
steps then cosine decay to 1e-4, gradient clipping at 1.0:

    lr(t) = 1e-3 · (t + 1)/100                                   t < 100
    lr(t) = 1e-4 + ½ (1e-3 − 1e-4)(1 + cos(π (t − 100)/1900))    t ≥ 100

The run is scored by the shared evaluator on the WHOLE validation split (nanoGPT's own
number is a 20-batch estimate). ``benchmarks/bench_gpt.py --quality`` trains the PyTorch
reference with the same recipe and scores it with the same evaluator.
Used by ``spiral train gpt``, the tour and the stage 8 experiments.
Chapter: stage 8, "Stacking blocks into GPT".
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from spiral.models.gpt import GPT, GPTConfig

# TrainConfig fields of the recipe (the rest are the shared loop's defaults)
RECIPES: dict[str, dict[str, Any]] = {
    "baby": dict(max_steps=2000, batch_size=12, seq_len=64, lr=1e-3, min_lr_ratio=0.1,
                 warmup_steps=100, schedule="cosine", weight_decay=0.1, grad_clip=1.0,
                 eval_interval=250),
    "small": dict(max_steps=5000, batch_size=64, seq_len=256, lr=1e-3, min_lr_ratio=0.1,
                  warmup_steps=100, schedule="cosine", weight_decay=0.1, grad_clip=1.0,
                  eval_interval=250),
}
BETAS = (0.9, 0.99)


def train_gpt(data_name: str, out_dir: str | Path | None = None, *, preset: str = "baby",
              seed: int = 0, model_overrides: dict[str, Any] | None = None,
              train_overrides: dict[str, Any] | None = None, resume: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Train a GPT preset on a corpus's fixed split; returns config, val nats, history, model.

    With ``out_dir``, the run directory gets ``config.json``, ``metrics.jsonl``, the
    checkpoint and ``samples.txt``; ``resume=True`` continues from its checkpoint.
    """
    from spiral import data
    from spiral.optim import AdamW
    from spiral.runs import train_in_run
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig

    if preset not in RECIPES:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(RECIPES)}")
    splits = data.get_splits(data_name)
    mcfg = GPTConfig.preset(preset, 1, **(model_overrides or {}))
    data.check_char_corpus(splits, mcfg.context_length)
    tok = CharTokenizer.from_text(splits.train)
    mcfg = replace(mcfg, vocab_size=tok.vocab_size)
    recipe = {**RECIPES[preset], "seq_len": mcfg.context_length, **(train_overrides or {})}
    tcfg = TrainConfig(seed=seed, progress=progress, **recipe)
    rng = np.random.default_rng(seed)
    model = GPT(mcfg, rng=rng)
    opt = AdamW(model.param_groups(tcfg.weight_decay), lr=tcfg.lr, betas=BETAS)
    config = {"model": "gpt", "preset": preset, "data": str(data_name),
              "model_config": mcfg.to_dict(), "train_config": tcfg.to_dict(),
              "betas": list(BETAS), "vocab": "".join(tok.itos),
              "n_parameters": model.num_parameters()}
    return train_in_run(model, opt, tok, splits, config, tcfg, rng, out_dir, resume=resume,
                        seed=seed)
