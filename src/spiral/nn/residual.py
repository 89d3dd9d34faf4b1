"""Residual blocks with the normalization before (pre-LN) or after (post-LN) the sub-layer.

    post-LN (Vaswani et al., 2017):  x_{l+1} = LN(x_l + F(x_l))
    pre-LN  (GPT-2; Xiong et al., 2020): x_{l+1} = x_l + F(LN(x_l)),   output LN(x_L)

In pre-LN the identity path runs untouched from the loss to every layer, so
∂L/∂x_l = ∂L/∂x_L · Π (I + J_{F∘LN}) keeps a copy of the top gradient at every depth. In
post-LN every layer's gradient passes through a LayerNorm Jacobian (1/σ)(I − 11ᵀ/d − x̂x̂ᵀ/d),
and σ of x + F(x) grows with the branch, so the products shrink or grow with depth; at
initialization the last layers' parameters get the largest gradients (Xiong et al., 2020),
which is why post-LN transformers need learning-rate warm-up.

The sub-layer here is a position-wise MLP (``FeedForward``); attention joins as a second
sub-layer in stage 8. Chapter: stage 6 (training stability), "Pre-LN versus post-LN".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn.activations import make_activation
from spiral.nn.layers import Linear
from spiral.nn.module import Module, ModuleList
from spiral.nn.norm import LayerNorm, RMSNorm

__all__ = ["FeedForward", "PreLNBlock", "PostLNBlock", "ResidualMLP", "make_norm"]


def make_norm(name: str, d_model: int, *, dtype: Any = np.float32) -> Module:
    """A normalization over the last axis by name: ``"layernorm"`` or ``"rmsnorm"``."""
    if name == "layernorm":
        return LayerNorm(d_model, dtype=dtype)
    if name == "rmsnorm":
        return RMSNorm(d_model, dtype=dtype)
    raise ValueError(f"unknown norm {name!r}; choose 'layernorm' or 'rmsnorm'")


class FeedForward(Module):
    """Position-wise MLP (..., d_model) -> (..., d_hidden) -> (..., d_model).

    >>> FeedForward(4, 8, rng=np.random.default_rng(0))(Tensor(np.ones((2, 4)))).shape
    (2, 4)
    """

    def __init__(self, d_model: int, d_hidden: int | None = None, activation: str = "gelu", *,
                 bias: bool = True, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        d_hidden = 4 * d_model if d_hidden is None else d_hidden
        self.fc = Linear(d_model, d_hidden, bias=bias, rng=rng, dtype=dtype)
        self.act = make_activation(activation)
        self.proj = Linear(d_hidden, d_model, bias=bias, rng=rng, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class PreLNBlock(Module):
    """x + sublayer(norm(x)): the norm sits inside the branch, the identity path stays clean."""

    def __init__(self, sublayer: Module, d_model: int, norm: str = "layernorm", *,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.norm = make_norm(norm, d_model, dtype=dtype)
        self.sublayer = sublayer

    def forward(self, x: Tensor) -> Tensor:
        return x + self.sublayer(self.norm(x))


class PostLNBlock(Module):
    """norm(x + sublayer(x)): the original transformer's placement, on the identity path."""

    def __init__(self, sublayer: Module, d_model: int, norm: str = "layernorm", *,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.sublayer = sublayer
        self.norm = make_norm(norm, d_model, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.sublayer(x))


class ResidualMLP(Module):
    """A stack of ``n_layers`` residual MLP blocks, pre-LN (plus a final norm) or post-LN.

    >>> net = ResidualMLP(8, 3, "pre", rng=np.random.default_rng(0))
    >>> net(Tensor(np.ones((2, 8)))).shape
    (2, 8)
    """

    def __init__(self, d_model: int, n_layers: int, placement: str = "pre",
                 d_hidden: int | None = None, activation: str = "gelu", norm: str = "layernorm",
                 *, rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        if placement not in ("pre", "post"):
            raise ValueError(f"placement must be 'pre' or 'post', got {placement!r}")
        self.placement = placement
        block = PreLNBlock if placement == "pre" else PostLNBlock
        self.blocks = ModuleList(
            block(FeedForward(d_model, d_hidden, activation, rng=rng, dtype=dtype), d_model,
                  norm, dtype=dtype)
            for _ in range(n_layers)
        )
        # pre-LN leaves the residual stream un-normalized: GPT-2 adds one norm at the end
        self.final_norm = make_norm(norm, d_model, dtype=dtype) if placement == "pre" else None

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.final_norm(x) if self.final_norm is not None else x

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}, n_layers={len(self.blocks)}"
