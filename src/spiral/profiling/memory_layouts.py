"""Bytes per parameter for each optimizer and precision, and parameters by component.

A training step keeps, per parameter, its weight, its gradient, a master copy (mixed
precision only) and the optimizer's state. With K bytes of optimizer-side state per
parameter (ZeRO's notation), mixed-precision Adam is

    2 (fp16 weight) + 2 (fp16 gradient) + K,   K = 4 (fp32 master) + 4 (m) + 4 (v) = 12,

16 bytes per parameter before a single activation (Rajbhandari et al., *ZeRO*, 2020, §3.1).
Pure float32 Adam is 4 + 4 + 8 = 16 as well; SGD without momentum is 8.

``count_by_component(config)`` splits the GPT's parameter count into embeddings, attention,
FFN, norms and head; it sums to :func:`spiral.models.gpt.count_parameters`.
Papers: Micikevicius et al., *Mixed Precision Training* (2018); Rajbhandari et al. (2020).
Chapter: stage 11 (memory analysis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Layout", "layout_for", "bytes_per_parameter", "count_by_component",
           "OPTIMIZERS", "PRECISIONS", "famous_configs"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
PRECISIONS = ("fp32", "fp16", "bf16", "mixed")


@dataclass(frozen=True)
class Layout:
    """Bytes per parameter of each resident term, and the activations' element size."""

    optimizer: str
    precision: str
    param_bytes: int
    grad_bytes: int
    master_bytes: int
    state_bytes: int
    activation_bytes: int
    step_scratch: int  # bytes per element of the largest parameter, alive inside step()

    @property
    def per_parameter(self) -> int:
        return self.param_bytes + self.grad_bytes + self.master_bytes + self.state_bytes


def layout_for(optimizer: str = "adamw", precision: str = "fp32") -> Layout:
    """The storage layout of ``optimizer`` in ``precision`` (see the module docstring)."""
    opt, prec = optimizer.lower(), precision.lower()
    if opt not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if prec not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    moments = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}[opt]
    if prec == "fp32":
        return Layout(opt, prec, 4, 4, 0, 4 * moments, 4, 4)
    if prec in ("fp16", "bf16"):  # everything in 16 bits, no master copy
        return Layout(opt, prec, 2, 2, 0, 2 * moments, 2, 2)
    # mixed: 16-bit weights, gradients and activations; fp32 master weights and moments
    return Layout(opt, prec, 2, 2, 4, 4 * moments, 2, 4)


def bytes_per_parameter(optimizer: str = "adamw", precision: str = "fp32") -> int:
    """Resident bytes per parameter: weight + gradient + master + optimizer state."""
    return layout_for(optimizer, precision).per_parameter


def count_by_component(c: Any) -> dict[str, int]:
    """Parameters of ``GPT(c)`` by component; the values sum to ``count_parameters(c)``."""
    C, V, L, b = c.d_model, c.vocab_size, c.n_layers, int(c.bias)
    H = c.n_heads
    kv = getattr(c, "kv_heads", H)
    hd = C // H
    norm_type = getattr(c, "norm_type", "layernorm")
    ffn_type = getattr(c, "ffn_type", "gelu")
    hid = int(getattr(c, "hidden", max(1, int(round(c.expansion * C)))))
    qkv = (H + 2 * kv) * hd
    one_norm = ((1 + b) * C if norm_type == "layernorm" else C) if c.norm else 0
    mlp = 3 * C * hid if ffn_type == "swiglu" else 2 * C * hid + b * (hid + C)
    norms = L * one_norm * (2 if c.ffn else 1) + (one_norm if c.placement == "pre" else 0)
    return {
        "token_embedding": V * C,
        "position_embedding": c.context_length * C if c.positional == "learned" else 0,
        "attention_qkv": L * (C * qkv + b * qkv),
        "attention_out": L * (C * C + b * C),
        "ffn": L * mlp if c.ffn else 0,
        "norms": norms,
        "head": 0 if c.tie_weights else V * C,
    }


def famous_configs() -> dict[str, Any]:
    """GPT-2 small (124M), a Llama-3.2-1B-like and a Llama-2-7B-like configuration."""
    from spiral.models.gpt import GPTConfig

    llama: dict[str, Any] = dict(norm_type="rmsnorm", ffn_type="swiglu",
                                 positional="rope_halves", bias=False)
    return {
        "gpt2-124M": GPTConfig(vocab_size=50257, context_length=1024, n_layers=12,
                               n_heads=12, d_model=768, bias=True, tie_weights=True),
        "llama-1B": GPTConfig(vocab_size=128256, context_length=2048, n_layers=16,
                              n_heads=32, n_kv_heads=8, d_model=2048, ffn_hidden=8192,
                              tie_weights=True, rope_theta=500000.0, **llama),
        "llama-7B": GPTConfig(vocab_size=32000, context_length=4096, n_layers=32,
                              n_heads=32, d_model=4096, ffn_hidden=11008, tie_weights=False,
                              **llama),
    }
