"""Quantized linear layers and ``quantize_model``: swap a model's ``Linear`` modules by name.

Two kinds of layer (inference only, no gradients):

- W8A8 (``act_bits=8``): weights symmetric INT8 per output channel (scale s_w,j), activations
  symmetric INT8 per token, quantized on the fly (scale s_x,t); the product is integer,

      acc[t, j] = Σ_k q_x[t, k] · q_w[j, k]   (int32 accumulator),
      y[t, j]   = s_x,t · s_w,j · acc[t, j] + b_j.

  An int32 accumulator holds in_features · 127² < 2³¹ for in_features ≤ 133,144. NumPy's
  integer matmul does not use BLAS (it is hundreds of times slower than float32 here), so by
  default (``accumulate="float64"``) the same integer sum is computed by a float64 matmul of
  the integer codes: every product and partial sum is an integer below 2⁵³, hence exact in
  any order, and the result equals the int32 accumulator bit for bit (tested);
  ``accumulate="int32"`` runs the integer matmul itself.
- Weight-only (``act_bits=None``): b-bit codes (INT4 packed two per byte) dequantized on the fly
  to float, then an ordinary float matmul — what memory-bound decoding wants (stage 17).

``quantize_model`` picks layers by ``fnmatch`` patterns on their dotted names; ``exclude``
keeps layers in float and ``precision`` gives chosen layers other bit widths (mixed
precision). Papers: Jacob et al. (2018); Dettmers et al. (2022), LLM.int8(). Chapter: stage 18.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatch
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn import functional as F
from spiral.nn.layers import Linear
from spiral.nn.module import Module, Parameter
from spiral.quant.uniform import QTensor, dequantize, pack_int4, quantize, unpack_int4

INT32_SAFE_IN_FEATURES = (2**31 - 1) // 127**2


class QuantLinear(Module):
    """A ``Linear`` with quantized weights; build it with :meth:`from_linear`."""

    qweight: np.ndarray  # codes (int8/uint8), or uint8 bytes holding two INT4 codes each
    scale: np.ndarray  # (rows, 1)
    zero_point: np.ndarray | None  # (rows, 1) uint8 when asymmetric; symmetric stores none
    qbias: np.ndarray | None  # (out,)

    def __init__(self, qweight: QTensor, bias: np.ndarray | None, act_bits: int | None,
                 dtype: Any = np.float32, accumulate: str = "float64") -> None:
        super().__init__()
        out_features, in_features = qweight.shape
        if act_bits is not None:
            if act_bits != 8 or qweight.bits != 8 or not qweight.symmetric \
                    or qweight.granularity != "channel":
                raise ValueError("integer arithmetic needs symmetric per-channel INT8 weights "
                                 "and act_bits=8")
            if in_features > INT32_SAFE_IN_FEATURES:
                raise ValueError(f"in_features {in_features} could overflow an int32 "
                                 f"accumulator (max {INT32_SAFE_IN_FEATURES})")
        self.in_features, self.out_features = in_features, out_features
        if accumulate not in ("float64", "int32"):
            raise ValueError(f"accumulate must be 'float64' or 'int32', got {accumulate!r}")
        self.bits, self.act_bits, self.dtype = qweight.bits, act_bits, dtype
        self.accumulate = accumulate
        self.granularity, self.symmetric = qweight.granularity, qweight.symmetric
        self._rows_shape = qweight.codes.shape
        codes = qweight.codes
        stored = pack_int4(codes) if qweight.bits <= 4 else codes
        self.register_buffer("qweight", stored)
        self.register_buffer("scale", qweight.scale.astype(dtype))
        self.register_buffer("zero_point", None if qweight.symmetric
                             else np.asarray(qweight.zero_point).astype(np.uint8))
        self.register_buffer("qbias", None if bias is None else np.asarray(bias, dtype=dtype))

    @classmethod
    def from_linear(cls, layer: Linear, bits: int = 8, *, act_bits: int | None = None,
                    symmetric: bool = True, granularity: str = "channel",
                    group_size: int = 128, calibration: str = "minmax") -> QuantLinear:
        w = layer.weight.data
        q = quantize(w, bits, symmetric=symmetric, granularity=granularity,
                     group_size=group_size, calibration=calibration)
        bias = None if layer.bias is None else layer.bias.data
        return cls(q, bias, act_bits, dtype=w.dtype)

    def codes(self) -> np.ndarray:
        """The integer weight codes in the (rows, cols) layout of their scales."""
        if self.bits > 4:
            return np.asarray(self.qweight)
        n = int(np.prod(self._rows_shape))
        return unpack_int4(self.qweight, n, self.symmetric).reshape(self._rows_shape)

    def config(self) -> dict[str, Any]:
        """What rebuilding the layer from its buffers needs (saved as file metadata)."""
        return {"bits": self.bits, "act_bits": self.act_bits, "symmetric": self.symmetric,
                "granularity": self.granularity, "rows_shape": list(self._rows_shape),
                "shape": [self.out_features, self.in_features]}

    def qtensor(self) -> QTensor:
        zp = (np.zeros(self.scale.shape, np.int32) if self.zero_point is None
              else self.zero_point.astype(np.int32))
        return QTensor(self.codes(), self.scale, zp, self.bits, self.symmetric,
                       self.granularity, (self.out_features, self.in_features))

    @property
    def weight(self) -> Parameter:
        """The dequantized (out, in) weight, for code that reads ``layer.weight`` directly."""
        return Parameter(dequantize(self.qtensor()).astype(self.dtype), requires_grad=False)

    @property
    def bias(self) -> Tensor | None:
        return None if self.qbias is None else Tensor(self.qbias)

    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        xd = np.asarray(x.data if isinstance(x, Tensor) else x)
        if self.act_bits is None:
            return F.linear(Tensor(xd), self.weight, self.bias)
        lead = xd.shape[:-1]
        xr = xd.reshape(-1, self.in_features)  # (tokens, in)
        s_x = np.maximum(np.abs(xr).max(axis=1, keepdims=True) / 127.0,
                         np.finfo(np.float32).eps)  # (tokens, 1) per-token scale
        qx = np.clip(np.round(xr / s_x), -127, 127).astype(np.int8)
        if self.accumulate == "int32":
            acc = qx.astype(np.int32) @ self.codes().astype(np.int32).T  # (tokens, out)
        else:  # the same integers, summed exactly by BLAS (all below 2^53)
            acc = qx.astype(np.float64) @ self.codes().astype(np.float64).T
        y = acc.astype(np.float64) * s_x * self.scale.reshape(1, -1)
        if self.qbias is not None:
            y = y + self.qbias
        return Tensor(y.astype(self.dtype).reshape(*lead, self.out_features))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, act_bits={self.act_bits}, granularity={self.granularity}")


def _set_submodule(model: Module, name: str, module: Module) -> None:
    parent: Module = model
    *path, leaf = name.split(".")
    for p in path:
        parent = parent._modules[p]
    setattr(parent, leaf, module)


def quantize_model(model: Module, bits: int = 8, *, act_bits: int | None = None,
                   granularity: str = "channel", group_size: int = 128,
                   symmetric: bool = True, calibration: str = "minmax",
                   include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
                   precision: Mapping[str, int] | None = None) -> list[str]:
    """Replace matching ``Linear`` modules in place; returns the swapped names, in order.

    ``precision`` maps a pattern to a bit width that overrides ``bits`` for matching layers
    (the first matching pattern wins); a layer so kept at 8 bits stays weight-only unless
    ``act_bits`` is given. A GPT with untied ``lm_head`` reads its weight via the
    ``weight`` property, so a quantized head acts weight-only.
    """
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, Linear) and n
               and any(fnmatch(n, p) for p in include)
               and not any(fnmatch(n, p) for p in exclude)]
    swapped: list[str] = []
    for name, layer in targets:
        b = next((v for p, v in (precision or {}).items() if fnmatch(name, p)), bits)
        a = act_bits if b == 8 else None
        if granularity == "group" and layer.in_features % group_size:
            raise ValueError(f"{name}: in_features {layer.in_features} is not divisible by "
                             f"group_size {group_size}")
        q = QuantLinear.from_linear(layer, b, act_bits=a, symmetric=symmetric,
                                    granularity=granularity if a is None else "channel",
                                    group_size=group_size, calibration=calibration)
        _set_submodule(model, name, q)
        swapped.append(name)
    return swapped



def nbytes(model: Module) -> int:
    """Bytes of every parameter and persistent buffer (``state_dict``), a tied array once."""
    unique = {id(a): a for a in model.state_dict().values()}
    return sum(int(a.nbytes) for a in unique.values())
