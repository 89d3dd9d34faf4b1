"""The MLP language model's training recipe (stage 4), used by ``spiral train mlp``, the tour
and the experiments.

The defaults of :class:`~spiral.models.mlp.MLPConfig` and :class:`~spiral.train.TrainConfig`
are the recipe the chapter reports, so ``spiral train mlp --data names`` is the measured run.
A run directory holds ``config.json`` (model + training config, corpus, vocabulary),
``metrics.jsonl`` (one line per evaluation), ``checkpoint.safetensors`` and ``samples.txt``.
Chapter: stage 4 (the training toolkit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spiral.models.mlp import MLPConfig, MLPLanguageModel


def train_mlp(data_name: str, out_dir: str | Path | None = None, *, seed: int = 0,
              model_overrides: dict[str, Any] | None = None,
              train_overrides: dict[str, Any] | None = None, resume: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Train the MLP LM on a corpus's fixed split; returns config, final val loss, history."""
    from spiral import data
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW
    from spiral.runs import train_in_run
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig

    splits = data.get_splits(data_name)
    tcfg_window = (train_overrides or {}).get("seq_len")
    data.check_char_corpus(splits, int(tcfg_window or TrainConfig.seq_len))
    tok = CharTokenizer.from_text(splits.train)
    mcfg = MLPConfig(vocab_size=tok.vocab_size, **(model_overrides or {}))
    tcfg = TrainConfig(seed=seed, progress=progress, **(train_overrides or {}))
    rng = np.random.default_rng(seed)
    model = MLPLanguageModel(mcfg, rng=rng)
    opt = AdamW(param_groups(model, tcfg.weight_decay), lr=tcfg.lr)
    config = {"model": "mlp", "data": str(data_name), "model_config": mcfg.to_dict(),
              "train_config": tcfg.to_dict(), "vocab": "".join(tok.itos),
              "n_parameters": model.num_parameters()}
    return train_in_run(model, opt, tok, splits, config, tcfg, rng, out_dir, resume=resume,
                        seed=seed)


def fit_text(train_text: str, rng: np.random.Generator, *,
             model_overrides: dict[str, Any] | None = None,
             train_overrides: dict[str, Any] | None = None) -> MLPLanguageModel:
    """The default recipe trained on any text (for ``spiral tour``'s MLP rung).

    Ids are ``CharTokenizer.from_text(train_text)``'s. Periodic validation uses the last
    10 % of ``train_text`` (a monitor only; the caller scores its own validation split).
    """
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW
    from spiral.tokenizers.char import CharTokenizer
    from spiral.train import TrainConfig, train

    tok = CharTokenizer.from_text(train_text)
    ids = tok.encode_array(train_text)
    model = MLPLanguageModel(MLPConfig(vocab_size=tok.vocab_size, **(model_overrides or {})),
                             rng=rng)
    tcfg = TrainConfig(**{"progress": False, **(train_overrides or {})})
    opt = AdamW(param_groups(model, tcfg.weight_decay), lr=tcfg.lr)
    train(model, opt, ids, ids[-len(ids) // 10:], tcfg, rng)
    return model
