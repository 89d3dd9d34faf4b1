"""The Bengio-style MLP language model: embed the last n tokens, concatenate, MLP, softmax.

    e = [E[x_{t-n+1}]; ...; E[x_t]]                      (n · d_embed,)  one-hot × E = lookup
    h_1 = σ(W_1 e + b_1),  h_l = σ(W_l h_{l-1} + b_l)    (d_hidden,)
    p(x_{t+1} | x_{t-n+1..t}) = softmax(W_out h_L + b_out)   (vocab_size,)

trained by minimising the cross-entropy (= maximising the likelihood) of the next token.
Positions with fewer than n earlier tokens inside the window see a learned padding row
(id ``vocab_size``), so the model scores every position of a window, as the evaluator asks.

``n_context`` (Bengio's n − 1) is what the model sees; ``context_length`` is only the window
length of the shared evaluator (:mod:`spiral.evaluate`), as for the n-gram models.
Paper: Bengio, Ducharme, Vincent & Jauvin, *A Neural Probabilistic Language Model* (JMLR 2003).
Chapter: stage 4 (the neural language model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.models.base import CausalLM
from spiral.nn.activations import make_activation
from spiral.nn.layers import Dropout, Embedding, Linear
from spiral.nn.module import ModuleList


@dataclass(frozen=True)
class MLPConfig:
    """Sizes of the MLP language model."""

    vocab_size: int
    n_context: int = 8          # tokens the model sees (Bengio's n - 1)
    d_embed: int = 16           # size of each token's embedding
    d_hidden: int = 128         # width of every hidden layer
    n_layers: int = 2           # number of hidden layers
    activation: str = "tanh"    # relu | tanh | gelu | gelu_tanh | silu
    dropout: float = 0.0
    head_init_scale: float = 0.1  # shrink the output layer so the first predictions are ~uniform
    context_length: int = 256   # the evaluator's window length (not the model's context)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MLPLanguageModel(CausalLM):
    """idx (B, T) int ids -> logits (B, T, vocab_size) for the token after each position."""

    def __init__(self, config: MLPConfig, *, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        if config.n_context < 1 or config.n_layers < 0:
            raise ValueError("n_context must be >= 1 and n_layers >= 0")
        self.config = config
        self.context_length = config.context_length
        self.receptive_field = config.n_context  # the generator feeds only this many tokens
        self.pad_id = config.vocab_size
        self.embedding = Embedding(config.vocab_size + 1, config.d_embed, rng=rng, dtype=dtype)
        width = config.n_context * config.d_embed
        self.hidden = ModuleList()
        for _ in range(config.n_layers):
            self.hidden.append(Linear(width, config.d_hidden, rng=rng, dtype=dtype))
            width = config.d_hidden
        self.act = make_activation(config.activation)
        self.drop = Dropout(config.dropout, rng=rng)
        self.head = Linear(width, config.vocab_size, rng=rng, dtype=dtype)
        if config.head_init_scale != 1.0:
            self.head.weight.data *= config.head_init_scale
            assert self.head.bias is not None
            self.head.bias.data[...] = 0.0

    def contexts(self, idx: np.ndarray) -> np.ndarray:
        """(B, T) ids -> (B, T, n_context): the n tokens ending at each position, pad-filled."""
        idx = np.asarray(idx, dtype=np.int64)
        n = self.config.n_context
        pad = np.full((idx.shape[0], n - 1), self.pad_id, dtype=np.int64)
        padded = np.concatenate([pad, idx], axis=1)  # (B, T + n - 1)
        return np.lib.stride_tricks.sliding_window_view(padded, n, axis=1)  # (B, T, n)

    def features(self, idx: np.ndarray) -> list[Tensor]:
        """The input to every layer and the pre-activations: [e, a_1, ..., a_L] (for probes)."""
        ctx = self.contexts(idx)
        B, T, n = ctx.shape
        # (B, T, n, d_embed) -> (B, T, n · d_embed): concatenate the n embeddings
        x = self.embedding(ctx).reshape(B, T, n * self.config.d_embed)
        out = [x]
        for layer in self.hidden:
            a = layer(x)  # (B, T, d_hidden) pre-activation
            out.append(a)
            x = self.drop(self.act(a))
        out.append(x)
        return out

    def forward(self, idx: np.ndarray | Tensor) -> Tensor:
        ids = idx.data if isinstance(idx, Tensor) else idx
        return self.head(self.features(ids)[-1])  # (B, T, vocab_size)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_context={c.n_context}, d_embed={c.d_embed}, d_hidden={c.d_hidden}, "
                f"n_layers={c.n_layers}, activation={c.activation!r}")
