"""GPTQ against a direct Optimal Brain Surgeon loop, and against round-to-nearest."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.quant import dequantize, quantize
from spiral.quant.gptq import damped, gptq_quantize, grid, hessian, quantize_column

pytestmark = pytest.mark.stage18


def _correlated_inputs(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """(n, d) inputs with a random covariance and a few large channels (like LLM activations)."""
    mix = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    scale = np.where(rng.random(d) < 0.1, 5.0, 1.0)
    return (rng.standard_normal((n, d)) @ mix) * scale


def obs_reference(w: np.ndarray, h: np.ndarray, bits: int, symmetric: bool, granularity: str,
                  group_size: int, act_order: bool) -> np.ndarray:
    """The OBS update one column at a time with the explicit inverse Hessian downdate."""
    w = w.astype(np.float64).copy()
    w[:, np.diag(h) == 0] = 0.0
    s, z = grid(w, bits, symmetric, granularity, group_size)
    hinv = np.linalg.inv(damped(h))
    order = np.argsort(-np.diag(damped(h)), kind="stable") if act_order else range(w.shape[1])
    remaining = np.ones(w.shape[1], dtype=bool)
    q = np.zeros_like(w)
    for i in order:
        q[:, i] = quantize_column(w[:, i], s[:, i], z[:, i], bits, symmetric)
        # δ_F = −(w_i − q_i) / [H_F⁻¹]_ii · (H_F⁻¹)_{i,F}
        w[:, remaining] -= np.outer((w[:, i] - q[:, i]) / hinv[i, i], hinv[i, remaining])
        hinv = hinv - np.outer(hinv[:, i], hinv[i, :]) / hinv[i, i]
        remaining[i] = False
    return q


@pytest.mark.parametrize("granularity,act_order,symmetric,blocksize",
                         [("channel", False, True, 5), ("channel", True, True, 7),
                          ("group", True, False, 3), ("group", False, False, 64)])
def test_gptq_equals_the_direct_obs_update(granularity: str, act_order: bool,
                                           symmetric: bool, blocksize: int) -> None:
    rng = np.random.default_rng(0)
    x = _correlated_inputs(rng, 200, 16)
    x[:, 3] = 0.0  # a dead input
    w = rng.standard_normal((6, 16))
    h = hessian(x)
    q = gptq_quantize(w, h, 3, symmetric=symmetric, granularity=granularity, group_size=8,
                      blocksize=blocksize, act_order=act_order)
    ref = obs_reference(w, h, 3, symmetric, granularity, 8, act_order)
    np.testing.assert_allclose(dequantize(q), ref, rtol=0, atol=1e-8)
    assert np.any(dequantize(q) != dequantize(quantize(w * (np.diag(h) != 0), 3,
                                                       symmetric=symmetric,
                                                       granularity=granularity,
                                                       group_size=8)))  # not plain RTN


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_reconstruction_never_worse_than_rtn(seed: int, bits: int) -> None:
    rng = np.random.default_rng(seed)
    x = _correlated_inputs(rng, 512, 64)
    w = rng.standard_normal((32, 64)) * 0.1
    for act_order in (False, True):
        q = gptq_quantize(w, hessian(x), bits, act_order=act_order, blocksize=16)
        rtn = quantize(w, bits, granularity="channel")
        e_gptq = np.linalg.norm(x @ (w - dequantize(q)).T)
        e_rtn = np.linalg.norm(x @ (w - dequantize(rtn)).T)
        assert e_gptq <= e_rtn


def test_gptq_codes_respect_the_grid_and_bad_input_is_refused() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 8))
    q = gptq_quantize(w, hessian(rng.standard_normal((50, 8))), 4)
    assert q.codes.min() >= -7 and q.codes.max() <= 7
    with pytest.raises(ValueError, match="disagree"):
        gptq_quantize(w, np.eye(5))
    with pytest.raises(ValueError, match="calibration"):
        hessian(np.zeros((0, 8)))
