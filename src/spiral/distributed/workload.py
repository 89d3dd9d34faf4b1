"""The one training problem every parallel strategy is checked on, and its single-process run.

A strategy is correct when N processes, each doing part of the work, end a run with the
same parameters as one process that trained on the same global batches. That needs one
definition of the problem: :class:`TrainSpec` (model sizes, global batch, optimizer,
steps, seed, dtype), :func:`make_model` (the same initial weights on every rank, from the
seed), :func:`global_batches` (the same global batches everywhere) and
:func:`train_single` (the reference). The loss is the mean next-token cross-entropy over
every position of the global batch, so a shard of b = B/N rows contributes

    ∇L = (1/B) Σ_i ∇ℓ_i = (1/N) Σ_r (1/b) Σ_{i∈r} ∇ℓ_i = mean over ranks of shard gradients.

Dropout is off: a strategy that splits the batch would otherwise draw different masks.
Chapter: stage 13.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.optim import AdamW

__all__ = ["TrainSpec", "make_model", "make_optimizer", "global_batches", "loss_fn",
           "train_single", "state_of"]


@dataclass(frozen=True)
class TrainSpec:
    """Model, data and optimizer of a run; every rank builds the same from it."""

    vocab_size: int = 16
    context_length: int = 8
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 16
    batch_size: int = 8          # the GLOBAL batch, split across data-parallel ranks
    steps: int = 20
    lr: float = 1e-2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    seed: int = 0
    dtype: str = "float64"
    data: str = "synthetic"      # or "shakespeare" (characters of the training split)
    micro_batches: int = 4       # pipeline parallel: m
    schedule: str = "1f1b"       # pipeline parallel: naive | gpipe | 1f1b
    tp: int = 2                  # tensor-parallel width inside DP × TP
    bucket_cap_bytes: int = 16384  # DP and ZeRO: gradient bucket size
    allreduce: str = "bucketed"  # data parallel: naive | ring | bucketed

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=self.vocab_size, context_length=self.context_length,
                         n_layers=self.n_layers, n_heads=self.n_heads, d_model=self.d_model,
                         dropout=0.0, bias=False, tie_weights=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_model(spec: TrainSpec) -> GPT:
    """The GPT with the run's initial weights (identical on every rank: same seed)."""
    return GPT(spec.gpt_config(), rng=np.random.default_rng(spec.seed),
               dtype=np.dtype(spec.dtype))


def make_optimizer(model: GPT, spec: TrainSpec) -> AdamW:
    """AdamW over nanoGPT's two groups (decay matrices and embeddings, not gains)."""
    return AdamW(model.param_groups(spec.weight_decay), lr=spec.lr, betas=spec.betas)


def _token_stream(spec: TrainSpec) -> np.ndarray:
    if spec.data == "synthetic":
        rng = np.random.default_rng(spec.seed + 1)
        return rng.integers(0, spec.vocab_size, size=4096)
    if spec.data == "shakespeare":
        from spiral import data
        from spiral.tokenizers.char import CharTokenizer

        s = data.get_splits("shakespeare")
        tok = CharTokenizer.from_text(s.train)
        if tok.vocab_size != spec.vocab_size:
            raise ValueError(f"shakespeare has {tok.vocab_size} characters; set vocab_size")
        return np.asarray(tok.encode(s.train), dtype=np.int64)
    raise ValueError(f"data must be 'synthetic' or 'shakespeare', got {spec.data!r}")


def global_batches(spec: TrainSpec) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` global batches (x, y), each (batch_size, context_length), from the seed."""
    from spiral import data

    ids = _token_stream(spec)
    rng = np.random.default_rng(spec.seed + 2)
    return [data.sample_batch(ids, spec.batch_size, spec.context_length, rng)
            for _ in range(spec.steps)]


def loss_fn(model: Any, x: np.ndarray, y: np.ndarray) -> Tensor:
    """Mean next-token cross-entropy over every position of (x, y)."""
    return F.cross_entropy(model(x), y)


def state_of(model: Any) -> dict[str, np.ndarray]:
    """Copies of the model's parameters by name."""
    return {name: p.data.copy() for name, p in model.named_parameters()}


def train_single(spec: TrainSpec, start: int = 0, stop: int | None = None,
                 model: Any = None, optimizer: Any = None) -> dict[str, Any]:
    """The reference: one process, the global batch, AdamW steps ``start``..``stop``."""
    model = make_model(spec) if model is None else model
    opt = make_optimizer(model, spec) if optimizer is None else optimizer
    losses = []
    for x, y in global_batches(spec)[start:stop]:
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return {"losses": losses, "state": state_of(model), "model": model, "optimizer": opt}
