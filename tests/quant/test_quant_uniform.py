"""Uniform quantization: the s/2 error bound, the s²/12 variance, granularity, calibration, INT4 packing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spiral.quant import dequantize, pack_int4, qrange, quantize, unpack_int4
from spiral.quant.uniform import calibrate, to_rows

pytestmark = pytest.mark.stage18

GRANS = st.sampled_from(["tensor", "channel", "group"])


@given(seed=st.integers(0, 2**31), bits=st.integers(2, 8), symmetric=st.booleans(),
       granularity=GRANS, spread=st.floats(1e-3, 1e3), shift=st.floats(-2.0, 2.0))
def test_max_error_at_most_half_a_step_inside_the_range(seed: int, bits: int, symmetric: bool,
                                                         granularity: str, spread: float,
                                                         shift: float) -> None:
    x = (np.random.default_rng(seed).standard_normal((6, 16)) + shift) * spread
    q = quantize(x, bits, symmetric=symmetric, granularity=granularity, group_size=8)
    err = np.abs(dequantize(q) - x)
    half = to_rows(np.broadcast_to(q.scale, to_rows(x, granularity, 8).shape).copy(),
                   granularity, 8).reshape(x.shape) / 2  # each element's s/2
    assert np.all(err <= half * (1 + 1e-9) + 1e-12 * spread)
    qmin, qmax = qrange(bits, symmetric)
    assert q.codes.min() >= qmin and q.codes.max() <= qmax


@given(seed=st.integers(0, 2**31), bits=st.integers(2, 8), symmetric=st.booleans())
def test_zero_is_exact_and_values_on_the_grid_come_back_exactly(seed: int, bits: int,
                                                                symmetric: bool) -> None:
    x = np.random.default_rng(seed).uniform(-3, 5, 64)
    q = quantize(np.append(x, 0.0), bits, symmetric=symmetric)
    xhat = dequantize(q)
    assert xhat[-1] == 0.0
    np.testing.assert_allclose(dequantize(quantize(xhat, bits, symmetric=symmetric)), xhat,
                               atol=1e-12)


@pytest.mark.parametrize("bits", [4, 8])
def test_error_variance_is_step_squared_over_twelve(bits: int) -> None:
    """Inputs uniform over whole bins: error ~ U(−s/2, s/2), variance s²/12.

    n = 200,000 samples; the sample variance of a uniform has relative sd √(0.8/n) ≈ 0.2 %,
    so a 2 % tolerance is ten standard deviations.
    """
    rng = np.random.default_rng(bits)
    n = 200_000
    x = rng.uniform(-1.0, 1.0, n)
    q = quantize(np.append(x, [-1.0, 1.0]), bits)  # pin the range to [-1, 1]
    s = float(q.scale.reshape(-1)[0])
    e = dequantize(q)[:n] - x
    assert abs(e.mean()) < 5 * s / np.sqrt(12 * n)
    assert abs(e.var() / (s**2 / 12) - 1) < 0.02


def test_finer_granularity_never_increases_the_error_on_rows_with_different_scales() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 64)) * rng.lognormal(0, 1.5, (32, 1))  # outlier rows
    errs = [np.mean((dequantize(quantize(w, 4, granularity=g, group_size=16)) - w) ** 2)
            for g in ("tensor", "channel", "group")]
    assert errs[0] > errs[1] > errs[2]


def test_mse_clipping_beats_minmax_with_an_outlier_and_percentile_clips() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4096)
    x[0] = 40.0  # one outlier stretches the min–max range
    mse = np.mean((dequantize(quantize(x, 4, calibration="minmax")) - x) ** 2)
    mse_opt = np.mean((dequantize(quantize(x, 4, calibration="mse")) - x) ** 2)
    assert mse_opt < 0.5 * mse
    lo, hi = calibrate(x.reshape(1, -1), 4, True, "percentile", percentile=99.0)
    assert hi[0, 0] < 40.0 and lo[0, 0] > x.min()


@given(seed=st.integers(0, 2**31), n=st.integers(0, 41), signed=st.booleans())
def test_int4_pack_unpack_round_trip(seed: int, n: int, signed: bool) -> None:
    lo, hi = (-8, 7) if signed else (0, 15)
    codes = np.random.default_rng(seed).integers(lo, hi + 1, n).astype(
        np.int8 if signed else np.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == np.uint8 and packed.size == (n + 1) // 2
    np.testing.assert_array_equal(unpack_int4(packed, n, signed), codes)


def test_clear_errors_on_bad_input() -> None:
    with pytest.raises(ValueError, match="bits"):
        quantize(np.ones(4), 9)
    with pytest.raises(ValueError, match="group_size"):
        quantize(np.ones((2, 6)), 4, granularity="group", group_size=4)
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="INT4"):
        pack_int4(np.array([16]))
    with pytest.raises(ValueError, match="unpack"):
        unpack_int4(np.zeros(2, np.uint8), 5, True)


@given(seed=st.integers(0, 2**31), bits=st.integers(2, 8), symmetric=st.booleans(),
       calibration=st.sampled_from(["percentile", "mse"]))
def test_clipped_calibration_half_step_inside_and_clamped_outside(seed: int, bits: int,
                                                                  symmetric: bool,
                                                                  calibration: str) -> None:
    x = np.random.default_rng(seed).standard_t(3, (4, 200))  # heavy tails: real clipping
    q = quantize(x, bits, symmetric=symmetric, granularity="channel", calibration=calibration,
                 percentile=99.0)
    qmin, qmax = qrange(bits, symmetric)
    lo, hi = (qmin - q.zero_point) * q.scale, (qmax - q.zero_point) * q.scale  # (4, 1)
    err = np.abs(dequantize(q) - x)
    inside = (x >= lo) & (x <= hi)
    assert np.all(err[inside] <= (np.broadcast_to(q.scale, x.shape)[inside] / 2) * (1 + 1e-9))
    outside = np.clip(x, lo, hi)  # beyond the range a value lands on the nearest edge
    np.testing.assert_allclose(dequantize(q)[~inside], outside[~inside], atol=1e-12)
