"""Shared helpers of the spiral.hub tests: small random transformers models saved offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


def hf_logits(hf_model: Any, ids: np.ndarray) -> np.ndarray:
    import torch

    hf_model.eval()
    with torch.no_grad():
        return hf_model(torch.tensor(ids, dtype=torch.long)).logits.numpy()


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|: the error relative to the scale of the logits (an
    element-wise ratio is meaningless for logits that happen to be near zero)."""
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def save_random(kind: str, folder: Path, seed: int = 0, **cfg: Any) -> Any:
    """A transformers model of ``kind`` ("gpt2" | "llama") with random weights, saved."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(seed)
    if kind == "gpt2":
        base = dict(vocab_size=61, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                    bos_token_id=0, eos_token_id=0, initializer_range=0.2)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**base, **cfg}))
    else:
        base = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                    initializer_range=0.2)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**base, **cfg}))
    with torch.no_grad():  # norms at 1 and biases at 0 would hide mapping mistakes
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "bias" not in name else 0.0))
    model.eval()
    model.save_pretrained(folder)
    return model


def token_ids(vocab_size: int, shape: tuple[int, int] = (3, 17), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, shape)
