"""The attention language model: embeddings, one causal self-attention head, an MLP readout.

    x_t = E[tok_t] + P[t]                                  (d_model,)  token + learned position
    h_t = x_t + Attn(LN(x_t), LN(x_{≤t}))                  residual around the causal head
    p(tok_{t+1} | tok_{≤t}) = softmax(W_2 GELU(W_1 LN(h_t) + b_1) + b_2)

Unlike the stage-4 MLP, which concatenates a FIXED window of n embeddings, position t here
reads ALL earlier positions of its window, with weights that depend on content. Attention
alone is blind to order (it is permutation-equivariant), so a learned position embedding P
(one row per position, as GPT-1/2) is added to the tokens; stage 9 studies positions properly.
The layer norms and the residual connection are stage 6's; the head is
:class:`spiral.nn.attention.SelfAttention`, so ``scale=False`` runs the √d ablation.
Papers: Vaswani et al. (2017); Radford et al. (2018) for learned positions.
Chapter: stage 7 (attention from first principles).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor, no_grad
from spiral.models.base import CausalLM
from spiral.nn.activations import GELU
from spiral.nn.attention import SelfAttention
from spiral.nn.layers import Embedding, Linear
from spiral.nn.norm import LayerNorm

__all__ = ["AttentionLMConfig", "AttentionLanguageModel"]


@dataclass(frozen=True)
class AttentionLMConfig:
    """Sizes of the attention language model."""

    vocab_size: int
    context_length: int = 64    # positions with an embedding: the longest window it reads
    d_model: int = 64
    head_dim: int | None = None  # None = d_model
    d_hidden: int = 256         # width of the MLP readout
    scale: bool = True          # 1/√head_dim on the logits (False: the ablation)
    causal: bool = True
    head_init_scale: float = 0.1  # shrink the output layer so the first predictions are ~uniform

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AttentionLanguageModel(CausalLM):
    """idx (B, T) ids, T <= context_length -> logits (B, T, vocab_size) for the next token."""

    def __init__(self, config: AttentionLMConfig, *, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.config = config
        self.context_length = config.context_length
        c = config
        self.tok_emb = Embedding(c.vocab_size, c.d_model, rng=rng, dtype=dtype)
        self.pos_emb = Embedding(c.context_length, c.d_model, rng=rng, dtype=dtype)
        self.ln_attn = LayerNorm(c.d_model, dtype=dtype)
        self.attn = SelfAttention(c.d_model, c.head_dim, causal=c.causal, scale=c.scale,
                                  rng=rng, dtype=dtype)
        self.ln_out = LayerNorm(c.d_model, dtype=dtype)
        self.fc = Linear(c.d_model, c.d_hidden, rng=rng, dtype=dtype)
        self.act = GELU()
        self.head = Linear(c.d_hidden, c.vocab_size, rng=rng, dtype=dtype)
        if c.head_init_scale != 1.0:
            self.head.weight.data *= c.head_init_scale
            assert self.head.bias is not None
            self.head.bias.data[...] = 0.0

    def embed(self, idx: np.ndarray) -> Tensor:
        """(B, T) ids -> (B, T, d_model) token + position embeddings."""
        T = idx.shape[-1]
        if T > self.context_length:
            raise ValueError(f"sequence of {T} tokens is longer than context_length "
                             f"{self.context_length}")
        return self.tok_emb(idx) + self.pos_emb(np.arange(T))  # (B, T, C) + (T, C)

    def forward_with_weights(self, idx: np.ndarray | Tensor,
                             need_weights: bool = True) -> tuple[Tensor, np.ndarray | None]:
        """(B, T) ids -> logits (B, T, V) and the attention weights (B, T, T) (or None)."""
        ids = np.asarray(idx.data if isinstance(idx, Tensor) else idx, dtype=np.int64)
        x = self.embed(ids)  # (B, T, d_model)
        weights = None
        if need_weights:
            a, weights = self.attn(self.ln_attn(x), need_weights=True)
        else:
            a = self.attn(self.ln_attn(x))
        h = x + a  # residual: the token's own embedding survives the averaging
        return self.head(self.act(self.fc(self.ln_out(h)))), weights  # (B, T, V)

    def forward(self, idx: np.ndarray | Tensor) -> Tensor:
        return self.forward_with_weights(idx, need_weights=False)[0]

    def attention_weights(self, idx: np.ndarray) -> np.ndarray:
        """(B, T) ids -> (B, T, T) attention weights, row t = where position t looks."""
        with no_grad():
            return self.forward_with_weights(idx, need_weights=True)[1]  # type: ignore[return-value]

    def extra_repr(self) -> str:
        c = self.config
        return (f"context_length={c.context_length}, d_model={c.d_model}, "
                f"d_hidden={c.d_hidden}, scale={c.scale}")
