"""Uniform round-to-nearest (RTN) quantization: scales, zero points, granularity, calibration.

A b-bit code q in [q_min, q_max] stands for the real value s·(q − z):

    q = clamp(round(x / s) + z, q_min, q_max),      x̂ = s·(q − z).

Symmetric: z = 0, q in [−(2^(b−1) − 1), 2^(b−1) − 1] and s = max|x| / q_max.
Asymmetric: q in [0, 2^b − 1], s = (hi − lo) / (q_max − q_min), z = q_min − round(lo / s),
with the range [lo, hi] stretched to contain 0 so that 0 is exact (as PyTorch does).
For x inside the clipping range the error is at most s/2; for x uniform within a bin its
variance is s²/12. Granularity: one (s, z) per tensor, per output channel (row), or per
group of ``group_size`` consecutive inputs of a row. Calibration chooses [lo, hi]: min–max,
a percentile, or the clip ratio (of min–max) that minimises the squared error (grid search).
INT4 codes pack two per byte. Papers: Jacob et al. (2018); Nagel et al. (2021), "A white
paper on neural network quantization". Chapter: stage 18.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRANULARITIES = ("tensor", "channel", "group")
CALIBRATIONS = ("minmax", "percentile", "mse")


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """(q_min, q_max): the restricted signed range when symmetric, else unsigned."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


@dataclass
class QTensor:
    """Integer codes plus what dequantization needs; ``scale``/``zero_point`` are (rows, 1)."""

    codes: np.ndarray  # int8 (symmetric) or uint8 (asymmetric), shape of ``rows`` layout
    scale: np.ndarray  # (rows, 1) float
    zero_point: np.ndarray  # (rows, 1) int32
    bits: int
    symmetric: bool
    granularity: str
    shape: tuple[int, ...]


def to_rows(x: np.ndarray, granularity: str, group_size: int = 128) -> np.ndarray:
    """View x as (rows, cols) so that each row shares one (scale, zero point)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "tensor":
        return x.reshape(1, -1)
    if x.ndim < 1:
        raise ValueError("per-channel quantization needs at least one axis")
    if granularity == "channel":
        return x.reshape(x.shape[0], -1)
    if x.shape[-1] % group_size:
        raise ValueError(f"last dimension {x.shape[-1]} is not divisible by group_size "
                         f"{group_size}")
    return x.reshape(-1, group_size)


def scale_zero_point(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero_point) for ranges [lo, hi] (any matching shapes)."""
    qmin, qmax = qrange(bits, symmetric)
    eps = np.finfo(np.float32).eps
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / qmax, eps)
        return scale, np.zeros(scale.shape, dtype=np.int32)
    scale = np.maximum((hi - lo) / (qmax - qmin), eps)
    zp = np.clip(qmin - np.round(lo / scale), qmin, qmax).astype(np.int32)
    return scale, zp


def quantize_rows(rows: np.ndarray, scale: np.ndarray, zp: np.ndarray, bits: int,
                  symmetric: bool) -> np.ndarray:
    """Integer codes of rows (rows, cols) under per-row (scale, zero point) of shape (rows, 1)."""
    qmin, qmax = qrange(bits, symmetric)
    q = np.clip(np.round(rows / scale) + zp, qmin, qmax)
    return q.astype(np.int8 if symmetric else np.uint8)


def fake_quantize_rows(rows: np.ndarray, scale: np.ndarray, zp: np.ndarray, bits: int,
                       symmetric: bool) -> np.ndarray:
    """Quantize then dequantize, in the input's float dtype."""
    q = quantize_rows(rows, scale, zp, bits, symmetric).astype(np.int32)
    return ((q - zp) * scale).astype(rows.dtype)


def calibrate(rows: np.ndarray, bits: int, symmetric: bool, method: str = "minmax",
              percentile: float = 99.9, grid: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Per-row clipping range (lo, hi), each (rows, 1), by ``method``."""
    if method not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    if method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        lo = np.percentile(rows, 100.0 - percentile, axis=1, keepdims=True)
        hi = np.percentile(rows, percentile, axis=1, keepdims=True)
        return lo, hi
    lo, hi = rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True)
    if method == "minmax":
        return lo, hi
    best = np.full((rows.shape[0], 1), np.inf)
    best_lo, best_hi = lo.copy(), hi.copy()
    for r in np.linspace(1.0 / grid, 1.0, grid):  # clip ratios; r = 1 is min–max
        s, z = scale_zero_point(r * lo, r * hi, bits, symmetric)
        err = ((fake_quantize_rows(rows, s, z, bits, symmetric) - rows) ** 2).sum(
            axis=1, keepdims=True)
        better = err < best
        best = np.where(better, err, best)
        best_lo, best_hi = np.where(better, r * lo, best_lo), np.where(better, r * hi, best_hi)
    return best_lo, best_hi


def quantize(x: np.ndarray, bits: int = 8, *, symmetric: bool = True,
             granularity: str = "tensor", group_size: int = 128, calibration: str = "minmax",
             percentile: float = 99.9) -> QTensor:
    """RTN-quantize ``x``; per channel means per slice along axis 0 (a weight's output rows).

    >>> q = quantize(np.array([-1.0, 0.0, 0.5, 1.0]), bits=8)
    >>> q.codes.ravel().tolist(), round(float(dequantize(q)[2]), 2)
    ([-127, 0, 64, 127], 0.5)
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"quantize expects a float array, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError("quantize got NaN or infinite values")
    rows = to_rows(x, granularity, group_size)
    lo, hi = calibrate(rows, bits, symmetric, calibration, percentile)
    scale, zp = scale_zero_point(lo, hi, bits, symmetric)
    codes = quantize_rows(rows, scale, zp, bits, symmetric)
    return QTensor(codes, scale.astype(x.dtype), zp, bits, symmetric, granularity, x.shape)


def dequantize(q: QTensor) -> np.ndarray:
    """x̂ = s·(q − z), reshaped back to the original shape."""
    return ((q.codes.astype(np.int32) - q.zero_point) * q.scale).reshape(q.shape)


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Codes in [−8, 7] or [0, 15] -> uint8 bytes, two per byte (element 2i in the low nibble)."""
    flat = np.asarray(codes).reshape(-1).astype(np.int16)
    if flat.size and (flat.min() < -8 or flat.max() > 15):
        raise ValueError(f"INT4 codes must lie in [-8, 15], got [{flat.min()}, {flat.max()}]")
    nib = (flat & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, n: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_int4`: the first ``n`` codes, int8 (sign-extended) or uint8."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if not 0 <= n <= 2 * packed.size:
        raise ValueError(f"cannot unpack {n} INT4 codes from {packed.size} bytes")
    nib = np.empty(2 * packed.size, dtype=np.uint8)
    nib[0::2], nib[1::2] = packed & 0xF, packed >> 4
    nib = nib[:n]
    if not signed:
        return nib
    return np.where(nib >= 8, nib.astype(np.int16) - 16, nib).astype(np.int8)
