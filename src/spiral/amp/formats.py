"""Floating-point formats: bit layouts, ranges, precision, and rounding into them.

A binary floating-point number with e exponent bits and m mantissa (fraction) bits stores
sign s, biased exponent E and fraction f and means

    normal (1 ≤ E ≤ 2^e - 2):  (-1)^s · 2^(E - bias) · (1 + f/2^m),   bias = 2^(e-1) - 1
    subnormal (E = 0):         (-1)^s · 2^(1 - bias) · (f/2^m)

so the largest finite value is (2 - 2^-m)·2^bias, the smallest normal 2^(1-bias), the
smallest subnormal 2^(1-bias-m), and the spacing just above 1 (machine epsilon) 2^-m:
e sets the RANGE, m the PRECISION. float16 (e=5, m=10) has float32's precision cut to
≈3 decimal digits AND its range cut to [6·10⁻⁸, 65504]; bfloat16 (e=8, m=7) keeps float32's
range with ≈2-3 digits (the "brain float" of Google's TPUs). The float8 formats of H100-era
training (e4m3, e5m2; Micikevicius et al., 2022) are listed for comparison.

NumPy has float16; bfloat16 and float8 come from ``ml_dtypes`` (the dtypes JAX uses).
Rounding is to nearest, ties to even, as IEEE 754 and GPUs do. Papers: IEEE 754-2019;
Kalamkar et al. (2019) on bfloat16. Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["FORMATS", "FloatFormat", "dtype_of", "format_of", "round_to", "bit_fields"]

# name -> (exponent bits, mantissa bits, dtype); IEEE layouts with infinities except e4m3fn
_LAYOUTS: dict[str, tuple[int, int, Any]] = {
    "float32": (8, 23, np.float32),
    "float16": (5, 10, np.float16),
    "bfloat16": (8, 7, ml_dtypes.bfloat16),
    "float8_e5m2": (5, 2, ml_dtypes.float8_e5m2),
    "float8_e4m3fn": (4, 3, ml_dtypes.float8_e4m3fn),
}
FORMATS = tuple(_LAYOUTS)


@dataclass(frozen=True)
class FloatFormat:
    """One format's layout and the numbers the layout implies (derived, not looked up)."""

    name: str
    exponent_bits: int
    mantissa_bits: int

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def max(self) -> float:
        """(2 - 2^-m)·2^bias; e4m3fn has no infinities and spends the top code on NaN only,
        so its top exponent is usable: (2 - 2^-(m-1))·2^(bias+1) = 448."""
        m = self.mantissa_bits
        if self.name == "float8_e4m3fn":
            return (2.0 - 2.0 ** -(m - 1)) * 2.0 ** (self.bias + 1)
        return (2.0 - 2.0**-m) * 2.0**self.bias

    @property
    def smallest_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """The gap between 1 and the next representable number: 2^-m."""
        return 2.0**-self.mantissa_bits

    @property
    def unit_roundoff(self) -> float:
        """u = eps/2: the largest relative error of rounding to nearest (normal range)."""
        return self.eps / 2

    @property
    def decimal_digits(self) -> float:
        return float((self.mantissa_bits + 1) * np.log10(2.0))


def format_of(name: str) -> FloatFormat:
    """The :class:`FloatFormat` called ``name`` (one of ``FORMATS``)."""
    if name not in _LAYOUTS:
        raise ValueError(f"unknown float format {name!r}; choose from {FORMATS}")
    e, m, _ = _LAYOUTS[name]
    return FloatFormat(name, e, m)


def dtype_of(name: str) -> np.dtype:
    """The NumPy dtype of a format (ml_dtypes for bfloat16 and float8)."""
    format_of(name)
    return np.dtype(_LAYOUTS[name][2])


def round_to(x: np.ndarray, name: str) -> np.ndarray:
    """x rounded to the nearest value of format ``name`` (ties to even), returned in x's
    dtype: the value a low-precision store would keep, held in a high-precision array."""
    x = np.asarray(x)
    with np.errstate(over="ignore"):  # beyond the format's max: inf, as on the hardware
        return x.astype(dtype_of(name)).astype(x.dtype)


def bit_fields(value: float, name: str) -> tuple[str, str, str]:
    """(sign, exponent, mantissa) bit strings of ``value`` stored in format ``name``."""
    f = format_of(name)
    with np.errstate(over="ignore"):
        raw = np.asarray([value]).astype(dtype_of(name))
    word = int(raw.view(np.dtype(f"u{f.bits // 8}"))[0])
    bits = format(word, f"0{f.bits}b")
    return bits[0], bits[1:1 + f.exponent_bits], bits[1 + f.exponent_bits:]
