"""``spiral sample`` for Hugging Face models: a hub id or folder in, a continuation out.

:func:`is_hub_source` tells a Hugging Face model (a folder whose config.json names a
``model_type``, or an ``org/name`` id that is not a local path) from a ``spiral train`` run
directory; :func:`sample` loads it (:func:`spiral.hub.load`) and continues a prompt with
stage 6's sampler (:func:`spiral.generate.generate`: temperature, top-k, top-p). Without a
prompt, generation starts from the tokenizer's first special token (GPT-2's
``<|endoftext|>``, Llama 3's ``<|begin_of_text|>``). Chapter: stage 8 (real weights).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spiral.hub.api import is_hub_folder, load
from spiral.hub.errors import HubError

__all__ = ["is_hub_source", "sample"]

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def is_hub_source(source: str | Path) -> bool:
    """A Hugging Face model folder, or an ``org/name`` string that is not a local path."""
    p = Path(source)
    if p.exists():
        return p.is_dir() and is_hub_folder(p)
    return HUB_ID.fullmatch(str(source)) is not None


def sample(source: str | Path, prompt: str = "", *, max_new_tokens: int = 50, seed: int = 0,
           temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None) -> str:
    """The prompt and its continuation by the model at ``source`` (special tokens in the
    prompt act as control tokens, as in transformers)."""
    from spiral.generate import check_sampling_options, generate

    check_sampling_options(temperature, top_k, top_p)
    model, tok = load(source)
    if tok is None:
        raise HubError(f"{source} has no tokenizer.json, so it cannot turn text into ids")
    start = tok.encode(prompt, allowed_special="all")
    if not start:
        if not tok.special_tokens:
            raise HubError(f"{source}: an empty prompt needs a special start token, and this "
                           "tokenizer has none; pass --prompt TEXT")
        start = [next(iter(tok.special_tokens.values()))]
    out = generate(model, start, max_new_tokens, np.random.default_rng(seed),
                   temperature=temperature, top_k=top_k, top_p=top_p)
    return prompt + tok.decode(out)
