"""Activation modules and their derivatives: ReLU, Tanh, GELU (exact and tanh), SiLU, SwiGLU.

    ReLU(x) = max(0, x)              ReLU'(x) = 1[x > 0]           (dead when never > 0)
    tanh(x)                          tanh'(x) = 1 − tanh²(x)        (saturates for |x| ≫ 1)
    GELU(x) = x Φ(x)                 GELU'(x) = Φ(x) + x φ(x)       (Hendrycks & Gimpel, 2016)
    SiLU(x) = x σ(x)                 SiLU'(x) = σ(x)(1 + x(1 − σ(x)))  (Elfwing et al., 2018;
                                                                    "Swish", Ramachandran et al.)
    SwiGLU(x) = W₂ (SiLU(W₁x) ⊙ W₃x)  (Shazeer, 2020) — previewed here, used in stage 14.

The GELU module calls the fused op of stage 3 (``spiral.nn.functional.gelu``); ReLU, tanh and
sigmoid are Tensor primitives of stage 2. Chapter: stage 4 (activations and their derivatives).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn import functional as F
from spiral.nn.layers import Linear
from spiral.nn.module import Module


class ReLU(Module):
    """max(0, x), elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Tanh(Module):
    """tanh(x), elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class GELU(Module):
    """x Φ(x); ``approximate="tanh"`` uses ½x(1 + tanh(√(2/π)(x + 0.044715x³)))."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """x σ(x) (also called Swish with β = 1)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x.sigmoid()


Swish = SiLU


class SwiGLU(Module):
    """Gated feed-forward block d_model -> hidden -> d_model: W₂(SiLU(W₁x) ⊙ W₃x)."""

    def __init__(self, d_model: int, hidden: int, *, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.w1 = Linear(d_model, hidden, bias=False, rng=rng, dtype=dtype)
        self.w3 = Linear(d_model, hidden, bias=False, rng=rng, dtype=dtype)
        self.w2 = Linear(hidden, d_model, bias=False, rng=rng, dtype=dtype)
        self.act = SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


ACTIVATIONS: dict[str, type[Module]] = {"relu": ReLU, "tanh": Tanh, "gelu": GELU, "silu": SiLU}


def make_activation(name: str) -> Module:
    """An activation module by name: relu, tanh, gelu, gelu_tanh, silu."""
    if name == "gelu_tanh":
        return GELU(approximate="tanh")
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from "
                         f"{sorted([*ACTIVATIONS, 'gelu_tanh'])}") from None
