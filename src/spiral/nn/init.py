"""Weight initialization: choose Var(W) so the signal neither vanishes nor explodes with depth.

For y = W x with W (fan_out, fan_in), independent zero-mean weights and inputs,

    Var(y_i) = fan_in · Var(W) · E[x²]                         (variance through a layer)

so the forward pass keeps its second moment when Var(W) = 1/fan_in (LeCun et al., 1998),
the backward pass keeps it when Var(W) = 1/fan_out, and Glorot & Bengio (2010) compromise
with Var(W) = 2/(fan_in + fan_out) — **that** is Xavier/Glorot initialization. ReLU zeroes
half of its input, E[relu(z)²] = Var(z)/2, so He et al. (2015) double the variance:
Var(W) = 2/fan_in (Kaiming/He). Each scheme comes as a normal or a uniform law of the same
variance (U(−a, a) has variance a²/3, so a = √3 · std), times a ``gain`` per nonlinearity.

Names, gains, fan modes and defaults follow ``torch.nn.init``. Every random initializer takes
an explicit ``generator`` (a ``np.random.Generator``): we never seed globally. Each function
fills its argument in place (a ``Tensor``/``Parameter`` or an ndarray) and returns it.
Chapter: stage 6 (training stability), "Variance through a linear layer".
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

from spiral.autograd import Tensor

__all__ = [
    "calculate_gain", "calculate_fan_in_and_fan_out", "uniform_", "normal_", "constant_",
    "zeros_", "ones_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
    "kaiming_normal_",
]

T = TypeVar("T", Tensor, np.ndarray)

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor torch multiplies std by for a nonlinearity: E[φ(z)²] ≈ Var(z)/gain².

    linear/conv/sigmoid 1, tanh 5/3, relu √2, leaky_relu √(2/(1 + slope²)) (slope 0.01 by
    default), selu 3/4.

    >>> round(calculate_gain("relu"), 6), calculate_gain("tanh")
    (1.414214, 1.6666666666666667)
    """
    if nonlinearity in _LINEAR_FNS:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param} is not a valid number")
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4.0  # torch's choice (a value that keeps the forward pass stable)
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _array(tensor: Tensor | np.ndarray) -> np.ndarray:
    return tensor.data if isinstance(tensor, Tensor) else tensor


def calculate_fan_in_and_fan_out(tensor: Tensor | np.ndarray) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel): in·k and out·k, k = Π kernel.

    >>> calculate_fan_in_and_fan_out(np.zeros((4, 3)))
    (3, 4)
    """
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than "
                         "2 dimensions")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor: Tensor | np.ndarray, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor: T, values: Any) -> T:
    """Write ``values`` into the tensor's array in place, keeping its dtype."""
    arr = _array(tensor)
    arr[...] = np.asarray(values, dtype=np.float64).astype(arr.dtype, copy=False)
    return tensor


def uniform_(tensor: T, a: float = 0.0, b: float = 1.0, *, generator: np.random.Generator) -> T:
    """Fill with U(a, b).

    >>> w = uniform_(np.zeros(1000), -1.0, 1.0, generator=np.random.default_rng(0))
    >>> bool(w.min() >= -1.0 and w.max() < 1.0)
    True
    """
    return _fill(tensor, generator.uniform(a, b, _array(tensor).shape))


def normal_(tensor: T, mean: float = 0.0, std: float = 1.0, *,
            generator: np.random.Generator) -> T:
    """Fill with N(mean, std²)."""
    return _fill(tensor, generator.normal(mean, std, _array(tensor).shape))


def constant_(tensor: T, val: float) -> T:
    """Fill with ``val``."""
    return _fill(tensor, np.full(_array(tensor).shape, val))


def zeros_(tensor: T) -> T:
    """Fill with 0 (biases; the last layer of a residual branch in some recipes)."""
    return constant_(tensor, 0.0)


def ones_(tensor: T) -> T:
    """Fill with 1 (normalization gains)."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: T, gain: float = 1.0, *, generator: np.random.Generator) -> T:
    """Glorot/Xavier uniform: U(−a, a), a = gain·√(6/(fan_in + fan_out)).

    >>> w = xavier_uniform_(np.zeros((300, 100)), generator=np.random.default_rng(0))
    >>> bool(np.abs(w).max() <= np.sqrt(6 / 400))
    True
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std  # U(−a, a) has variance a²/3
    return _fill(tensor, generator.uniform(-bound, bound, _array(tensor).shape))


def xavier_normal_(tensor: T, gain: float = 1.0, *, generator: np.random.Generator) -> T:
    """Glorot/Xavier normal: N(0, gain²·2/(fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _fill(tensor, generator.normal(0.0, std, _array(tensor).shape))


def kaiming_uniform_(tensor: T, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", *, generator: np.random.Generator) -> T:
    """He/Kaiming uniform: U(−b, b), b = gain·√(3/fan), gain = calculate_gain(nonlinearity, a).

    torch's defaults (a = 0, leaky_relu) give gain √2, i.e. Var(W) = 2/fan_in.

    >>> w = kaiming_uniform_(np.zeros((50, 200)), generator=np.random.default_rng(0))
    >>> bool(np.abs(w).max() <= np.sqrt(6 / 200))
    True
    """
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return _fill(tensor, generator.uniform(-bound, bound, _array(tensor).shape))


def kaiming_normal_(tensor: T, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", *, generator: np.random.Generator) -> T:
    """He/Kaiming normal: N(0, gain²/fan), gain = calculate_gain(nonlinearity, a)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return _fill(tensor, generator.normal(0.0, std, _array(tensor).shape))
