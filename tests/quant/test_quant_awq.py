"""AWQ: the α search against a brute-force loop, scaling that keeps the float function, and
the quantized model's error against round-to-nearest."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.models.gpt import GPT, GPTConfig
from spiral.nn.layers import Linear
from spiral.quant import dequantize, quantize, quantize_model
from spiral.quant.awq import _groups, awq_model, awq_search, scale_and_fold

pytestmark = pytest.mark.stage18


def _outlier_inputs(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Activations with a few channels 20x larger than the rest (as in LLMs)."""
    return rng.standard_normal((n, d)) * np.where(np.arange(d) % 7 == 0, 20.0, 1.0)


def test_awq_search_equals_a_brute_force_search_over_alpha() -> None:
    rng = np.random.default_rng(0)
    x, w = _outlier_inputs(rng, 300, 16), rng.standard_normal((8, 16))
    s, alpha, losses = awq_search([w], x, 3, n_grid=10, granularity="group", group_size=8)
    brute = []
    for a in np.linspace(0, 1, 11):  # direct: s = s_x^a, quantize W·s, undo, output error
        sa = np.abs(x).mean(0) ** a
        wq = dequantize(quantize(w * sa, 3, granularity="group", group_size=8)) / sa
        brute.append(np.mean((x @ w.T - x @ wq.T) ** 2))
    np.testing.assert_allclose(losses, brute, rtol=1e-9)
    assert alpha == np.linspace(0, 1, 11)[int(np.argmin(brute))]
    np.testing.assert_allclose(s / s.mean(), (np.abs(x).mean(0) ** alpha)
                               / (np.abs(x).mean(0) ** alpha).mean(), rtol=1e-9)
    assert alpha > 0 and losses.min() < losses[0]  # outliers: scaling beats plain RTN


def _llama(n_kv_heads: int) -> GPT:
    cfg = GPTConfig(vocab_size=31, context_length=16, n_layers=2, n_heads=4,
                    n_kv_heads=n_kv_heads, d_model=32, norm_type="rmsnorm", ffn_type="swiglu",
                    positional="rope_halves", ffn_hidden=64)
    m = GPT(cfg, rng=np.random.default_rng(0))
    for _, p in m.named_parameters():  # non-trivial norm gains
        if p.ndim == 1:
            p.data[...] = np.random.default_rng(1).uniform(0.5, 2.0, p.shape)
    return m


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_scaling_and_folding_leaves_the_float_model_unchanged(n_kv_heads: int) -> None:
    m = _llama(n_kv_heads)
    ids = np.random.default_rng(2).integers(0, 31, (3, 16))
    before = m(ids).data.copy()
    modules = dict(m.named_modules())
    rng = np.random.default_rng(3)
    plans = [(names, prod, rng.uniform(0.3, 3.0, modules[names[0]].in_features))
             for names, prod in _groups(m)]
    assert len(plans) == 2 * (4 if n_kv_heads == 4 else 3)  # out_proj skipped under GQA
    scale_and_fold(modules, plans)  # type: ignore[arg-type]
    np.testing.assert_allclose(m(ids).data, before, rtol=1e-4, atol=1e-5)


def test_awq_model_beats_rtn_on_the_calibration_batch() -> None:
    ids = np.random.default_rng(4).integers(0, 31, (8, 16))
    ref = _llama(4)
    layers = {n for n, x in ref.named_modules() if isinstance(x, Linear)}
    logits = ref(ids).data
    rtn, awq = _llama(4), _llama(4)
    quantize_model(rtn, 3, granularity="group", group_size=16)
    alphas = awq_model(awq, ids, 3, granularity="group", group_size=16, n_grid=10)
    assert set(alphas) == layers and all(0.0 <= a <= 1.0 for a in alphas.values())
    e_rtn = np.mean((rtn(ids).data - logits) ** 2)
    e_awq = np.mean((awq(ids).data - logits) ** 2)
    assert e_awq < e_rtn


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="n_grid"):
        awq_search([np.ones((2, 4))], np.ones((3, 4)), n_grid=0)
    with pytest.raises(ValueError, match="calibration"):
        awq_search([np.ones((2, 4))], np.ones((0, 4)))
