"""GPTQ against a direct Optimal Brain Surgeon loop, and against round-to-nearest."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.models.gpt import GPT, GPTConfig
from spiral.nn.layers import Linear
from spiral.quant import dequantize, quantize
from spiral.quant.gptq import (
    _Recorder,
    damped,
    gptq_model,
    gptq_quantize,
    grid,
    hessian,
    quantize_column,
)
from spiral.quant.linear import QuantLinear, _set_submodule

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


def test_gptq_model_beats_rtn_on_each_layer_of_a_tiny_gpt() -> None:
    """Every swapped layer's output error on the calibration inputs is no worse than RTN's."""

    cfg = GPTConfig(vocab_size=29, context_length=16, n_layers=2, n_heads=2, d_model=32)
    ids = np.random.default_rng(3).integers(0, 29, (8, 16))
    float_model = GPT(cfg, rng=np.random.default_rng(0))
    layers = {n: m for n, m in float_model.named_modules() if isinstance(m, Linear)}
    m = GPT(cfg, rng=np.random.default_rng(0))
    names = gptq_model(m, ids, 4, act_order=True, blocksize=8, sequential=False)
    assert names == list(layers)
    quantized = dict(m.named_modules())
    # record float inputs per layer the same way gptq_model does, then compare layer errors
    recs = {n: _Recorder(layer) for n, layer in layers.items()}
    for n, r in recs.items():
        _set_submodule(float_model, n, r)
    float_model(ids)
    for n, layer in layers.items():
        assert isinstance(quantized[n], QuantLinear)
        x = np.concatenate(recs[n].inputs)
        w = layer.weight.data.astype(np.float64)
        e_gptq = np.linalg.norm(x @ (w - quantized[n].weight.data).T)
        e_rtn = np.linalg.norm(x @ (w - dequantize(quantize(w, 4, granularity="channel"))).T)
        assert e_gptq <= e_rtn, n


def test_sequential_gptq_calibrates_each_layer_on_the_quantized_model_before_it() -> None:
    """The paper's pass: the last layer's codes are GPTQ on the inputs it gets from the
    fully quantized model before it (recorded afresh here), not on float inputs."""
    cfg = GPTConfig(vocab_size=29, context_length=16, n_layers=2, n_heads=2, d_model=32,
                    norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves",
                    ffn_hidden=48)
    ids = np.random.default_rng(5).integers(0, 29, (6, 16))
    float_w = {n: x.weight.data.copy() for n, x in GPT(cfg, rng=np.random.default_rng(0))
               .named_modules() if isinstance(x, Linear)}
    seq, flat = GPT(cfg, rng=np.random.default_rng(0)), GPT(cfg, rng=np.random.default_rng(0))
    assert gptq_model(seq, ids, 3, blocksize=8) == list(float_w)
    gptq_model(flat, ids, 3, blocksize=8, sequential=False)
    last = "blocks.1.ffn.w2"
    layer = dict(seq.named_modules())[last]
    rec = _Recorder(layer)  # type: ignore[arg-type]
    _set_submodule(seq, last, rec)
    seq(ids)
    _set_submodule(seq, last, layer)
    expected = gptq_quantize(float_w[last], hessian(np.concatenate(rec.inputs)), 3, blocksize=8)
    np.testing.assert_array_equal(layer.codes(), expected.codes)  # type: ignore[operator]
    assert not np.array_equal(layer.codes(),  # type: ignore[operator]
                              dict(flat.named_modules())[last].codes())  # type: ignore[operator]
    first = "blocks.0.attn.qkv_proj"  # the first layer sees float inputs either way
    np.testing.assert_array_equal(dict(seq.named_modules())[first].codes(),  # type: ignore[operator]
                                  dict(flat.named_modules())[first].codes())  # type: ignore[operator]


@pytest.mark.parametrize("act_order", [False, True])
def test_column_losses_add_up_to_the_final_quadratic_loss(act_order: bool) -> None:
    """Each OBS step's loss increase is exact for a quadratic, so they sum to ½ δᵀ(H+λI)δ."""
    rng = np.random.default_rng(7)
    x, w = _correlated_inputs(rng, 300, 24), rng.standard_normal((5, 24))
    h = hessian(x)
    losses: list[float] = []
    q = gptq_quantize(w, h, 3, blocksize=5, act_order=act_order, column_losses=losses)
    d = w - dequantize(q)
    assert len(losses) == 24
    np.testing.assert_allclose(sum(losses), 0.5 * np.einsum("ri,ij,rj->", d, damped(h), d),
                               rtol=1e-9)
