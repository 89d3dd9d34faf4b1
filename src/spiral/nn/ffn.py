"""The transformer's feed-forward sub-layer: GPT-2's GELU MLP or Llama's SwiGLU.

GPT-2 (Radford et al., 2019) widens each position to e·d (e = 4) and back:

    FFN_GELU(x) = W₂ GELU(W₁ x),       W₁: d → e·d,  W₂: e·d → d       2·e·d² weights

Llama (Touvron et al., 2023) uses Shazeer's (2020) gated linear unit with a SiLU gate:

    FFN_SwiGLU(x) = W₂ (SiLU(W₁ x) ⊙ W₃ x),   W₁, W₃: d → h,  W₂: h → d     3·d·h weights

Three matrices instead of two, so at equal parameters the hidden width shrinks by 2/3:
3·d·h = 2·e·d²  ⇒  h* = 2·e·d/3 (= 8d/3 for e = 4). This module rounds h* to the NEAREST
multiple m of ``multiple_of`` (default 8; Llama's code rounds up to 256):

    h = m · round(2·e·d / (3·m)),   so |3·d·h − 2·e·d²| ≤ 3·d·m/2

per layer (:func:`swiglu_hidden`; a test checks the bound). A checkpoint whose width follows
another rule (Llama 3's ``ffn_dim_multiplier``, SmolLM's 1536) passes its width explicitly.
The SwiGLU layer is bias-free, as in Llama and PaLM; it reuses stage 4's
:class:`spiral.nn.activations.SwiGLU` (weights named w1 = gate, w3 = up, w2 = down).
Chapter: stage 8 (the GELU MLP) and stage 14 (SwiGLU and the 8/3·d width).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn.activations import SwiGLU
from spiral.nn.layers import Dropout
from spiral.nn.module import Module
from spiral.nn.residual import FeedForward as _PositionwiseMLP

__all__ = ["FFN_TYPES", "FeedForward", "SwiGLUFeedForward", "swiglu_hidden", "make_ffn"]

FFN_TYPES = ("gelu", "swiglu")


def swiglu_hidden(d_model: int, expansion: float = 4.0, multiple_of: int = 8) -> int:
    """The parameter-matched SwiGLU width m·round(2·e·d/(3·m)) (at least m).

    >>> swiglu_hidden(128), swiglu_hidden(576, multiple_of=1), swiglu_hidden(2048, 4.0, 256)
    (344, 1536, 5376)
    """
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be a positive integer, got {multiple_of}")
    return multiple_of * max(1, round(2 * expansion * d_model / (3 * multiple_of)))


class FeedForward(_PositionwiseMLP):
    """Position-wise W₂ GELU(W₁ x): (..., d_model) -> (..., expansion·d_model) -> (..., d_model).

    Stage 6's MLP sub-layer with GPT's knobs: an expansion ratio (4 in GPT-2; a float is
    rounded to an integer width) or an explicit ``hidden`` width, optional biases, the GELU
    approximation (``"none"`` exact, ``"tanh"`` as GPT-2) and dropout on the output.

    >>> FeedForward(8, 2.0, rng=np.random.default_rng(0))(Tensor(np.ones((3, 8)))).shape
    (3, 8)
    """

    def __init__(self, d_model: int, expansion: float = 4.0, *, bias: bool = False,
                 activation: str = "gelu", dropout: float = 0.0, hidden: int | None = None,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        d_hidden = max(1, int(round(expansion * d_model))) if hidden is None else hidden
        super().__init__(d_model, d_hidden, activation, bias=bias, rng=rng, dtype=dtype)
        self.expansion, self.hidden = expansion, d_hidden
        self.drop = Dropout(dropout, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(super().forward(x))


class SwiGLUFeedForward(SwiGLU):
    """W₂(SiLU(W₁x) ⊙ W₃x) with dropout on the output: (..., d) -> (..., h) -> (..., d).

    >>> f = SwiGLUFeedForward(8, rng=np.random.default_rng(0))
    >>> f.hidden, f(Tensor(np.ones((3, 8)))).shape
    (24, (3, 8))
    """

    def __init__(self, d_model: int, expansion: float = 4.0, *, hidden: int | None = None,
                 multiple_of: int = 8, dropout: float = 0.0,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        h = swiglu_hidden(d_model, expansion, multiple_of) if hidden is None else hidden
        super().__init__(d_model, h, rng=rng, dtype=dtype)
        self.expansion, self.hidden = expansion, h
        self.drop = Dropout(dropout, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(super().forward(x))

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}"


def make_ffn(ffn_type: str, d_model: int, expansion: float = 4.0, *, bias: bool = False,
             gelu_approximate: str = "none", hidden: int | None = None, multiple_of: int = 8,
             dropout: float = 0.0, rng: np.random.Generator | None = None,
             dtype: Any = np.float32) -> Module:
    """The feed-forward sub-layer by name: ``"gelu"`` (GPT-2) or ``"swiglu"`` (Llama)."""
    if ffn_type == "gelu":
        if gelu_approximate not in ("none", "tanh"):
            raise ValueError(f"gelu_approximate must be 'none' or 'tanh', "
                             f"got {gelu_approximate!r}")
        act = "gelu" if gelu_approximate == "none" else "gelu_tanh"
        return FeedForward(d_model, expansion, bias=bias, activation=act, dropout=dropout,
                           hidden=hidden, rng=rng, dtype=dtype)
    if ffn_type == "swiglu":
        if bias:
            raise ValueError("the SwiGLU feed-forward is bias-free (as Llama); set bias=False")
        return SwiGLUFeedForward(d_model, expansion, hidden=hidden, multiple_of=multiple_of,
                                 dropout=dropout, rng=rng, dtype=dtype)
    raise ValueError(f"ffn_type must be one of {FFN_TYPES}, got {ffn_type!r}")
