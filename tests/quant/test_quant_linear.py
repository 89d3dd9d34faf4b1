"""The quantized linear layer against the float reference, and quantize_model on a tiny GPT."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn.layers import Linear
from spiral.quant.linear import QuantLinear, nbytes, quantize_model

pytestmark = pytest.mark.stage18


def _layer(rng: np.random.Generator, n_in: int = 48, n_out: int = 24) -> Linear:
    return Linear(n_in, n_out, rng=rng, dtype=np.float64)


def test_int8_layer_within_the_derived_error_bound() -> None:
    """x̂ = x + e_x, ŵ = w + e_w with |e_x| ≤ s_x/2, |e_w| ≤ s_w/2, so per output
    |ŷ − y| ≤ Σ_k (|x_k| s_w/2 + |w_k| s_x/2 + s_x s_w/4)."""
    rng = np.random.default_rng(0)
    lin = _layer(rng)
    x = rng.standard_normal((5, 7, 48)) * rng.lognormal(0, 1, (1, 1, 48))
    q = QuantLinear.from_linear(lin, 8, act_bits=8)
    y, ref = q(Tensor(x)).data, lin(Tensor(x)).data
    s_w = q.scale.reshape(-1)  # (out,)
    s_x = np.abs(x).max(axis=-1, keepdims=True) / 127  # (5, 7, 1)
    w = lin.weight.data
    bound = (np.abs(x).sum(-1, keepdims=True) * s_w / 2 + s_x / 2 * np.abs(w).sum(1)
             + 48 * s_x * s_w / 4)
    err = np.abs(y - ref)
    assert np.all(err <= bound * (1 + 1e-9))
    assert err.max() > 0.01 * bound.max()  # the layer really is quantized


def test_int8_integer_path_equals_the_fake_quantized_float_product() -> None:
    rng = np.random.default_rng(1)
    lin = _layer(rng)
    x = rng.standard_normal((9, 48))
    q = QuantLinear.from_linear(lin, 8, act_bits=8)
    s_x = np.abs(x).max(axis=1, keepdims=True) / 127
    xhat = np.clip(np.round(x / s_x), -127, 127) * s_x
    expect = xhat @ q.weight.data.T + lin.bias.data
    np.testing.assert_allclose(q(Tensor(x)).data, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("granularity", ["channel", "group"])
def test_weight_only_int4_stores_packed_bytes_and_matches_its_dequantized_weight(
        granularity: str) -> None:
    rng = np.random.default_rng(2)
    lin = _layer(rng)
    q = QuantLinear.from_linear(lin, 4, granularity=granularity, group_size=16)
    assert q.qweight.dtype == np.uint8 and q.qweight.size == 48 * 24 // 2
    assert np.abs(q.codes()).max() <= 7
    x = rng.standard_normal((3, 48))
    expect = x @ q.weight.data.T + lin.bias.data
    np.testing.assert_allclose(q(Tensor(x)).data, expect, rtol=1e-12)


def test_int8_layer_refuses_configurations_it_cannot_do_in_integers() -> None:
    lin = _layer(np.random.default_rng(3))
    with pytest.raises(ValueError, match="INT8"):
        QuantLinear.from_linear(lin, 4, act_bits=8)


def _tiny_gpt() -> GPT:
    cfg = GPTConfig(vocab_size=23, context_length=16, n_layers=2, n_heads=2, d_model=32,
                    tie_weights=False)
    return GPT(cfg, rng=np.random.default_rng(0))


def test_quantize_model_swaps_exactly_the_matching_layers() -> None:
    m = _tiny_gpt()
    linears = [n for n, x in m.named_modules() if isinstance(x, Linear)]
    swapped = quantize_model(m, 4, include=("blocks.*",), exclude=("*.out_proj",),
                             precision={"blocks.0.*": 8})
    expect = [n for n in linears if n.startswith("blocks.") and not n.endswith(".out_proj")]
    assert swapped == expect
    kinds = dict(m.named_modules())
    for n in linears:
        assert isinstance(kinds[n], QuantLinear) == (n in expect)
    assert kinds["blocks.0.ffn.fc"].bits == 8 and kinds["blocks.1.ffn.fc"].bits == 4


def test_quantized_gpt_logits_stay_close_and_int8_is_far_closer_than_int4() -> None:
    """Measured tolerance: INT8's step is ~18x finer than INT4's (127 vs 7 levels a side),
    so its logit error must be well under INT4's and under 2 % of the logits' norm."""
    ids = np.random.default_rng(1).integers(0, 23, (2, 16))
    ref = _tiny_gpt()(ids).data
    errs = {}
    for bits, act in ((8, 8), (8, None), (4, None)):
        m = _tiny_gpt()
        m.eval()
        quantize_model(m, bits, act_bits=act)
        assert isinstance(m.lm_head, QuantLinear)
        errs[bits, act] = np.linalg.norm(m(ids).data - ref) / np.linalg.norm(ref)
    assert errs[8, 8] < 0.02 and errs[8, None] < 0.02
    assert errs[8, None] < errs[4, None] / 5
    assert errs[4, None] > 0  # the head and blocks really changed


def test_nbytes_counts_packed_int4_at_half_a_byte_per_weight() -> None:
    lin = _layer(np.random.default_rng(4), 48, 24)  # float64 layer: scales and bias float64
    q = QuantLinear.from_linear(lin, 4, granularity="group", group_size=16)
    groups = 24 * 48 // 16
    assert nbytes(q) == 24 * 48 // 2 + groups * 8 + 24 * 8  # codes, scales, bias (z = 0)
    qa = QuantLinear.from_linear(lin, 4, granularity="group", group_size=16, symmetric=False)
    assert nbytes(qa) == nbytes(q) + groups  # one uint8 zero point per group
    assert nbytes(lin) == (24 * 48 + 24) * 8
    m = _tiny_gpt()
    before = nbytes(m)
    quantize_model(m, 4, granularity="group", group_size=16)
    assert nbytes(m) < before


def test_float64_accumulator_equals_the_int32_one_bit_for_bit() -> None:
    rng = np.random.default_rng(9)
    lin = _layer(rng, 96, 40)
    x = rng.standard_normal((7, 96)).astype(np.float32) * 3
    fast = QuantLinear.from_linear(lin, 8, act_bits=8)
    slow = QuantLinear(fast.qtensor(), None if lin.bias is None else lin.bias.data, 8,
                       dtype=lin.weight.data.dtype, accumulate="int32")
    np.testing.assert_array_equal(fast(x).data, slow(x).data)
    with pytest.raises(ValueError, match="accumulate"):
        QuantLinear(fast.qtensor(), None, 8, accumulate="int8")
