"""Run directories: what ``spiral train`` writes and ``spiral sample`` (or any script) loads.

A run directory holds ``config.json`` (``"model"``: ``"mlp"`` or ``"gpt"``, the model's and
the training loop's configs, the corpus, the vocabulary), ``metrics.jsonl``,
``checkpoint.safetensors`` and ``samples.txt``. :func:`load_run` rebuilds the right model
from ``config.json`` and loads its weights (safetensors: loading never executes code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class RunError(ValueError):
    """A run directory that is missing, incomplete or written for another model."""


def _build(kind: str, model_config: dict[str, Any]) -> Any:
    if kind == "mlp":
        from spiral.models.mlp import MLPConfig, MLPLanguageModel

        return MLPLanguageModel(MLPConfig(**model_config), rng=np.random.default_rng(0))
    if kind == "gpt":
        from spiral.models.gpt import GPT, GPTConfig

        return GPT(GPTConfig(**model_config), rng=np.random.default_rng(0))
    raise RunError(f"config.json names model {kind!r}; this version knows 'mlp' and 'gpt'")


def load_run(run_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, config) of a run directory written by ``spiral train``."""
    from spiral import checkpoint
    from spiral.tokenizers.char import CharTokenizer

    run = Path(run_dir)
    hint = "train one with `spiral train mlp|gpt --data CORPUS --out DIR`"
    if not run.is_dir():
        raise RunError(f"{run} is not a run directory ({hint})")
    cfg_path, ckpt = run / "config.json", run / "checkpoint.safetensors"
    if not cfg_path.is_file():
        raise RunError(f"{run} has no config.json, so it is not a run directory ({hint})")
    try:
        config: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8"))
        kind, model_config, vocab = config["model"], config["model_config"], config["vocab"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{cfg_path} is not a config written by `spiral train` ({err})") from None
    if not ckpt.is_file():
        raise RunError(f"{run} has no checkpoint.safetensors yet (was the training stopped "
                       "before its first checkpoint? resume it with `spiral train ... --resume`)")
    try:
        model = _build(str(kind), dict(model_config))
    except TypeError as err:
        raise RunError(f"{cfg_path}: its model_config does not fit this version's "
                       f"{kind} ({err})") from None
    checkpoint.load(ckpt, model)
    return model, CharTokenizer(list(vocab)), config


def train_in_run(model: Any, optimizer: Any, tok: Any, splits: Any, config: dict[str, Any],
                 train_config: Any, rng: np.random.Generator, out_dir: str | Path | None, *,
                 resume: bool = False, seed: int = 0) -> dict[str, Any]:
    """Train ``model`` on ``splits`` (character ids from ``tok``) into a run directory.

    With ``out_dir``: ``resume`` continues from its checkpoint (refusing changed settings
    before ``config.json`` is rewritten), otherwise the folder starts fresh; after training,
    ``samples.txt`` holds 20 names or a passage. Returns config, final validation loss,
    wall time, history, model and tokenizer. The recipes (:mod:`spiral.recipes`) call it.
    """
    import time

    from spiral.generate import sample_text
    from spiral.records import atomic_write_text
    from spiral.train import TrainState, train
    from spiral.train import resume as resume_run

    train_ids, val_ids = tok.encode_array(splits.train), tok.encode_array(splits.val)
    state = TrainState()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        ckpt = out / "checkpoint.safetensors"
        if resume and ckpt.is_file():
            state = resume_run(ckpt, model, optimizer, rng, meta=config)
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
        atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    t0 = time.perf_counter()
    state = train(model, optimizer, train_ids, val_ids, train_config, rng, out_dir=out,
                  state=state, checkpoint_meta=config)
    wall = time.perf_counter() - t0
    if out is not None:
        names = splits.name == "names"
        prompt = "\n" if "\n" in tok.stoi else splits.train[0]
        text = sample_text(model, tok, np.random.default_rng(seed), n=20, prompt=prompt,
                           names=names)
        atomic_write_text(out / "samples.txt", text.rstrip("\n") + "\n")
    return {"config": config, "val_nats": state.history[-1]["val_loss"], "train_s": wall,
            "history": state.history, "model": model, "tokenizer": tok}
