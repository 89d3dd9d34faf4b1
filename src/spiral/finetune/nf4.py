"""NF4: 4-bit NormalFloat weights with double-quantized block scales, and QLoRA on top.

Pretrained weights are close to normal, so QLoRA (Dettmers et al., 2023) spends its 16 codes
on equal-probability slices of N(0, 1): with δ = ½(1 − 1/30 + 1 − 1/32) = 0.9677083, the
positive codes are Φ⁻¹ of 9 evenly spaced points in [½, δ] (zero and 8 values), the negative
ones −Φ⁻¹ of 8 points in [½, δ] (7 values; zero counted once), all divided by the largest, so
the set is {−1, …, 0, …, 1} with an exact zero. A weight w in a block of 64 with absmax
c = max|w| is stored as the index of the code nearest w / c (4 bits) and read back as c·q.

Double quantization: the fp32 block scales (32/64 = 0.5 bits per weight) are themselves
quantized, after subtracting their mean, to 8 bits in blocks of 256 with an fp32 absmax each:
8/64 + 32/(64·256) ≈ 0.127 bits per weight. (The paper uses 8-bit floats there, bitsandbytes
a dynamic 8-bit code; we use linear absmax int8, the simplest choice.) Two 4-bit codes share
one byte: the first in the high nibble.

``NF4LoRALinear`` keeps the base weight only in this form and dequantizes it on every forward;
gradients reach the LoRA factors and the input, never the base.
Chapter: stage 15 (fine-tuning); stage 18 takes quantization further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spiral.autograd import Tensor
from spiral.finetune.lora import (
    DEFAULT_TARGETS,
    LoRALinear,
    frozen_linear,
    inject_lora,
    lora_modules,
)
from spiral.nn.layers import Linear
from spiral.nn.module import Module, Parameter

OFFSET = 0.5 * ((1 - 1 / (2 * 15)) + (1 - 1 / (2 * 16)))  # δ = 0.9677083...


def normal_ppf(p: float) -> float:
    """Φ⁻¹(p) of the standard normal by bisection on erfc (to float64 resolution)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"normal_ppf needs p in (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def nf4_code(offset: float = OFFSET) -> np.ndarray:
    """The 16 NF4 values, ascending, from −1 to 1 with an exact 0 (float64)."""
    pos = [normal_ppf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]  # 8 values > 0
    neg = [-normal_ppf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]  # 7 values < 0
    v = np.sort(np.array(pos + [0.0] + neg))
    return v / np.abs(v).max()


NF4 = nf4_code()


@dataclass
class NF4Tensor:
    """A quantized array: packed codes, int8 scales, their fp32 scales and mean."""

    packed: np.ndarray        # (ceil(n / 2),) uint8, two codes per byte
    qscale: np.ndarray        # (n_blocks,) int8, the double-quantized absmax per block
    scale_absmax: np.ndarray  # (ceil(n_blocks / dq_blocksize),) float32
    scale_mean: float         # subtracted from the scales before their quantization
    shape: tuple[int, ...]
    blocksize: int = 64
    dq_blocksize: int = 256

    def nbytes(self) -> int:
        return self.packed.nbytes + self.qscale.nbytes + self.scale_absmax.nbytes + 4

    def dequantize(self) -> np.ndarray:
        return dequantize_nf4(self)


def nf4_nbytes(numel: int, blocksize: int = 64, dq_blocksize: int = 256) -> int:
    """Bytes of ``quantize_nf4`` of ``numel`` weights: codes, int8 scales, fp32 scale scales."""
    n_blocks = -(-numel // blocksize)  # the last block is stored padded
    return -(-n_blocks * blocksize // 2) + n_blocks + 4 * -(-n_blocks // dq_blocksize) + 4


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    pad = (-x.size) % size
    return np.pad(x.ravel(), (0, pad)).reshape(-1, size)  # (n_blocks, size), zero padded


def nearest_code(x: np.ndarray, code: np.ndarray = NF4) -> np.ndarray:
    """Index of the nearest code value for every entry of x (ties to the lower index)."""
    mid = (code[1:] + code[:-1]) / 2  # the 15 decision boundaries
    return np.searchsorted(mid, x, side="left").astype(np.uint8)


def quantize_scales(c: np.ndarray, dq_blocksize: int) -> tuple[np.ndarray, np.ndarray, float]:
    """c (fp32 absmax per block) -> (int8 codes, fp32 absmax per 256 scales, mean)."""
    mean = float(c.mean())
    b = _blocks(c.astype(np.float64) - mean, dq_blocksize)  # (n, 256)
    amax = np.abs(b).max(axis=1)
    amax = np.where(amax > 0, amax, 1.0).astype(np.float32)
    q = np.clip(np.rint(b / amax[:, None] * 127), -127, 127).astype(np.int8)
    return q.ravel()[:c.size].copy(), amax, mean  # a copy: the view would keep the padding


def dequantize_scales(q: NF4Tensor) -> np.ndarray:
    n = q.qscale.size
    b = _blocks(q.qscale.astype(np.float64), q.dq_blocksize) / 127 * q.scale_absmax[:, None]
    return (b.ravel()[:n] + q.scale_mean).astype(np.float32)


def quantize_nf4(w: np.ndarray, blocksize: int = 64, dq_blocksize: int = 256) -> NF4Tensor:
    """Block-wise absmax NF4 with double-quantized scales, packed two codes per byte."""
    w = np.asarray(w, dtype=np.float32)
    if w.size == 0:
        raise ValueError("quantize_nf4: empty array")
    b = _blocks(w, blocksize)                    # (n_blocks, 64)
    c = np.abs(b).max(axis=1)                    # (n_blocks,) absmax
    safe = np.where(c > 0, c, 1.0)
    idx = nearest_code(b / safe[:, None]).ravel()
    idx = np.pad(idx, (0, idx.size % 2))
    packed = (idx[0::2] << 4) | idx[1::2]        # first code in the high nibble
    qs, amax, mean = quantize_scales(c, dq_blocksize)
    return NF4Tensor(packed.astype(np.uint8), qs, amax, mean, tuple(w.shape), blocksize,
                     dq_blocksize)


def unpack(packed: np.ndarray) -> np.ndarray:
    return np.stack([packed >> 4, packed & 0x0F], axis=1).ravel()  # (2·bytes,) codes


def dequantize_nf4(q: NF4Tensor) -> np.ndarray:
    """float32 array of q.shape: code value × (double-dequantized) block absmax."""
    n = int(np.prod(q.shape))
    idx = unpack(q.packed)[: -(-n // q.blocksize) * q.blocksize]
    idx = np.pad(idx, (0, (-idx.size) % q.blocksize)).reshape(-1, q.blocksize)
    vals = NF4.astype(np.float32)[idx] * dequantize_scales(q)[:, None]
    return vals.ravel()[:n].reshape(q.shape)


def absmax_int4_roundtrip(w: np.ndarray, blocksize: int = 64) -> np.ndarray:
    """The baseline: symmetric int4 (levels −7…7 of c/7) with fp32 block absmax c."""
    w = np.asarray(w, dtype=np.float32)
    b = _blocks(w, blocksize)
    c = np.abs(b).max(axis=1, keepdims=True)
    c = np.where(c > 0, c, 1.0)
    return (np.clip(np.rint(b / c * 7), -7, 7) * c / 7).ravel()[:w.size].reshape(w.shape)


class NF4Linear(Module):
    """A frozen Linear whose weight lives in NF4 and is dequantized at every call."""

    def __init__(self, linear: Linear, blocksize: int = 64, dq_blocksize: int = 256) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = linear.weight.dtype
        self.qweight = quantize_nf4(linear.weight.data, blocksize, dq_blocksize)
        self.bias: Parameter | None = None
        if linear.bias is not None:
            self.bias = Parameter(linear.bias.data.copy(), requires_grad=False)

    def dequantized_weight(self) -> np.ndarray:
        return dequantize_nf4(self.qweight).astype(self.dtype)  # (out, in)

    def forward(self, x: Tensor) -> Tensor:
        return frozen_linear(x, self.qweight, self.bias)  # dequantized on the fly


class NF4LoRALinear(LoRALinear):
    """QLoRA's layer: an NF4 base (frozen, dequantized on the fly) plus a LoRA adapter."""

    def __init__(self, base_layer: Linear, r: int = 8, lora_alpha: float = 8.0,
                 lora_dropout: float = 0.0, *, rng: np.random.Generator | None = None,
                 blocksize: int = 64) -> None:
        super().__init__(base_layer, r, lora_alpha, lora_dropout, rng=rng)
        self.base_layer = NF4Linear(base_layer, blocksize)  # type: ignore[assignment]

    def base_weight(self) -> NF4Tensor:
        return self.base_layer.qweight  # type: ignore[attr-defined]

    def base_forward(self, x: Tensor) -> Tensor:
        return self.base_layer(x)

    def merge(self) -> None:
        raise NotImplementedError("merging into a 4-bit base would requantize it; merge into "
                                  "a dequantized copy instead")


def inject_qlora(model: Module, r: int = 8, lora_alpha: float = 8.0,
                 target_modules: str | list[str] | tuple[str, ...] = DEFAULT_TARGETS,
                 lora_dropout: float = 0.0, *, rng: np.random.Generator | None = None
                 ) -> list[str]:
    """``inject_lora`` whose adapted bases are stored in NF4; returns the adapted names."""
    names = inject_lora(model, r, lora_alpha, target_modules, rng=rng)
    mods = dict(lora_modules(model))
    for name in names:
        old = mods[name]
        new = NF4LoRALinear(old.base_layer, r, lora_alpha, lora_dropout, rng=rng)
        new.lora_A.weight.data[...] = old.lora_A.weight.data
        parent_name, _, child = name.rpartition(".")
        parent = dict(model.named_modules())[parent_name] if parent_name else model
        setattr(parent, child, new)
    return names
