"""Quantization-aware training: fake quantization with the straight-through estimator.

The forward pass uses the weights the quantized model will have, ŵ = s·(clamp(round(w/s) + z,
q_min, q_max) − z), so training sees (and adapts to) the rounding. round has derivative 0
almost everywhere, which would stop all learning; the straight-through estimator (Bengio
et al. 2013) treats it as the identity inside the grid and keeps the clamp's zero outside:

    ∂ŵ/∂w ≈ 1  if q_min ≤ round(w/s) + z ≤ q_max,   else 0,

the gradient PyTorch's ``fake_quantize_per_channel_affine`` returns. The scale comes from
the current weights by min–max (like PyTorch's ``MinMaxObserver``) and is treated as a
constant. :func:`prepare_qat` swaps ``Linear`` for :class:`QATLinear`, which keeps the same
``weight`` Parameter (so an optimizer built before keeps working); :func:`convert` swaps
each one for the :class:`QuantLinear` whose dequantized weight is exactly the last ŵ.
Names follow ``torch.ao.quantization`` (``prepare_qat``, ``convert``). Paper: Jacob et al.
(2018); the estimator: Bengio, Léonard & Courville (2013). Chapter: stage 18.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.autograd.function import Function
from spiral.nn import functional as F
from spiral.nn.layers import Linear
from spiral.nn.module import Module, Parameter
from spiral.quant.gptq import grid
from spiral.quant.linear import QuantLinear, _set_submodule
from spiral.quant.uniform import qrange, quantize


class FakeQuantize(Function):
    """ŵ = s·(clamp(round(w/s) + z) − z); backward: the straight-through estimator."""

    @staticmethod
    def forward(ctx: Any, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                bits: int, symmetric: bool) -> np.ndarray:
        qmin, qmax = qrange(bits, symmetric)
        q = np.round(w / scale) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return ((np.clip(q, qmin, qmax) - zero_point) * scale).astype(w.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: np.ndarray) -> tuple[Any, ...]:
        (inside,) = ctx.saved_tensors
        return grad_output * inside, None, None, None, None


def fake_quantize(w: Tensor, bits: int = 4, *, symmetric: bool = True,
                  granularity: str = "channel", group_size: int = 128,
                  scale: np.ndarray | None = None,
                  zero_point: np.ndarray | None = None) -> Tensor:
    """Fake-quantize a weight (out, in) on its min–max grid, or on a given (scale, zero point)
    broadcastable to its shape; differentiable by the straight-through estimator."""
    if scale is None:
        scale, zero_point = grid(np.asarray(w.data), bits, symmetric, granularity, group_size)
    zp = np.zeros_like(scale) if zero_point is None else zero_point
    out: Tensor = FakeQuantize.apply(w, np.asarray(scale, dtype=w.data.dtype), zp, bits,
                                     symmetric)
    return out


class QATLinear(Module):
    """A ``Linear`` whose forward uses its fake-quantized weight (the float weight trains)."""

    def __init__(self, layer: Linear, bits: int = 4, *, symmetric: bool = True,
                 granularity: str = "channel", group_size: int = 128) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight: Parameter = layer.weight
        self.bias: Parameter | None = layer.bias
        self.qconfig: dict[str, Any] = dict(bits=bits, symmetric=symmetric, granularity=granularity,
                            group_size=group_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, fake_quantize(self.weight, **self.qconfig), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"qconfig={self.qconfig}")


def prepare_qat(model: Module, bits: int = 4, *, symmetric: bool = True,
                granularity: str = "channel", group_size: int = 128,
                include: Sequence[str] = ("*",), exclude: Sequence[str] = ("lm_head",)
                ) -> list[str]:
    """Swap matching ``Linear`` modules for :class:`QATLinear` in place; returns their names."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, Linear) and n
               and any(fnmatch(n, p) for p in include)
               and not any(fnmatch(n, p) for p in exclude)]
    for name, layer in targets:
        _set_submodule(model, name, QATLinear(layer, bits, symmetric=symmetric,
                                              granularity=granularity, group_size=group_size))
    return [n for n, _ in targets]


def convert(model: Module) -> list[str]:
    """Swap every :class:`QATLinear` for the :class:`QuantLinear` it simulates (in place)."""
    names = [n for n, m in model.named_modules() if isinstance(m, QATLinear)]
    for name in names:
        m = dict(model.named_modules())[name]
        assert isinstance(m, QATLinear)
        c = m.qconfig
        q = quantize(m.weight.data, c["bits"], symmetric=c["symmetric"],
                     granularity=c["granularity"], group_size=c["group_size"])
        bias = None if m.bias is None else m.bias.data
        _set_submodule(model, name, QuantLinear(q, bias, None, dtype=m.weight.data.dtype))
    return names
