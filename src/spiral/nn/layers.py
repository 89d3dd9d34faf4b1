"""Linear, Embedding, Dropout: the layers of the neural language model.

- ``Linear``: y = x Wᵀ + b with W (out, in), initialised as PyTorch does,
  W, b ~ U(−1/√fan_in, 1/√fan_in) (``kaiming_uniform_(a=√5)`` works out to that bound).
- ``Embedding``: E[ids], the same as one_hot(ids) @ E but without building the one-hot
  matrix; E ~ N(0, 1) as in torch. Its backward scatters rows back with summation.
- ``Dropout``: zero each activation with probability p and scale the survivors by
  1/(1 − p) so the expectation is unchanged (Srivastava et al., 2014); identity in eval mode.

Every layer takes an ``rng`` (one ``np.random.Generator`` passed down from the caller, never
a global seed) and a ``dtype`` (float32 for training, float64 for gradient checks).
Chapter: stage 4 (the neural language model); Bengio et al. (2003) for the embedding idea.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn import functional as F
from spiral.nn.blocking import flat_blocks
from spiral.nn.module import Module, Parameter


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


class Linear(Module):
    """Affine map (..., in_features) -> (..., out_features) with torch's default init.

    >>> Linear(3, 2, rng=np.random.default_rng(0))(Tensor(np.ones((4, 3)))).shape
    (4, 2)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        g = _rng(rng)
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = Parameter(g.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias: Parameter | None = None
        if bias:
            self.bias = Parameter(g.uniform(-bound, bound, (out_features,)).astype(dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class Embedding(Module):
    """Lookup table (num_embeddings, embedding_dim); ids (...) -> vectors (..., embedding_dim).

    >>> Embedding(5, 3, rng=np.random.default_rng(0))(np.array([[1, 2]])).shape
    (1, 2, 3)
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        w = _rng(rng).standard_normal((num_embeddings, embedding_dim))
        self.weight = Parameter(w.astype(dtype))

    def forward(self, ids: Tensor | np.ndarray) -> Tensor:
        idx = self.check_ids(ids)
        return self.weight[idx]  # (...,) -> (..., embedding_dim); backward sums repeated rows

    def check_ids(self, ids: Tensor | np.ndarray) -> np.ndarray:
        """The ids as an integer array, each in [0, num_embeddings) (else a clear error)."""
        idx = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding expects integer ids, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise IndexError(
                f"ids must lie in [0, {self.num_embeddings}), got [{idx.min()}, {idx.max()}]"
            )
        return idx

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Inverted dropout with probability ``p``; identity in eval mode or when p = 0."""

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = _rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        # the scaled keep-mask, 0 or 1/(1 − p), drawn block by block in order (the same
        # numbers as one draw of x's shape, without a float64 array of that shape)
        scaled = np.empty(x.shape, dtype=x.dtype)
        flat = scaled.reshape(-1)
        for b, keep in self._draws(flat.size):
            flat[b] = keep.astype(x.dtype) / (1.0 - self.p)
        return x * scaled

    def _draws(self, size: int) -> Any:
        """(block, keep) pairs: each block's survivors (True), drawn in order."""
        for b in flat_blocks(size):
            yield b, self.rng.random(b.stop - b.start) >= self.p  # True = survives

    def keep_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """The boolean keep-mask of one forward pass on an input of ``shape`` (the draws
        :meth:`forward` makes; it scales them as ``keep / (1 − p)``), one byte an entry."""
        keep = np.empty(shape, dtype=np.bool_)
        flat = keep.reshape(-1)
        for b, k in self._draws(flat.size):
            flat[b] = k
        return keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
