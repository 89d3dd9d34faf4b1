"""Quantization-aware training: the straight-through gradient, PyTorch parity, prepare/convert."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.nn.layers import Linear
from spiral.quant import QuantLinear
from spiral.quant.qat import QATLinear, convert, fake_quantize, prepare_qat

pytestmark = pytest.mark.stage18


def test_straight_through_gradient_is_identity_inside_the_grid_and_zero_outside() -> None:
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((4, 8)) * 2, requires_grad=True)
    scale = np.full((4, 1), 0.25)  # 4 bits: the grid reaches ±7·0.25 = ±1.75; some clip
    out = fake_quantize(w, 4, scale=scale)
    g = rng.standard_normal((4, 8))
    (out * Tensor(g)).sum().backward()
    inside = np.abs(np.round(w.data / 0.25)) <= 7
    assert 0 < inside.sum() < inside.size  # both cases occur
    np.testing.assert_array_equal(w.grad, g * inside)
    np.testing.assert_allclose(out.data, np.clip(np.round(w.data / 0.25), -7, 7) * 0.25)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), bits=st.integers(2, 8), symmetric=st.booleans(),
       clip=st.floats(0.2, 1.5))
def test_ste_gradient_is_the_clamp_mask_for_any_grid(seed: int, bits: int, symmetric: bool,
                                                     clip: float) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, 16))
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    scale = np.full((3, 1), clip * np.abs(w).max() / (qmax - qmin) * 2)
    zp = np.zeros((3, 1)) if symmetric else np.full((3, 1), (qmax + 1) // 2)
    t = Tensor(w, requires_grad=True)
    out = fake_quantize(t, bits, symmetric=symmetric, scale=scale, zero_point=zp)
    g = rng.standard_normal(w.shape)
    (out * Tensor(g)).sum().backward()
    code = np.round(w / scale) + zp
    np.testing.assert_array_equal(t.grad, g * ((code >= qmin) & (code <= qmax)))
    np.testing.assert_allclose(out.data, (np.clip(code, qmin, qmax) - zp) * scale)


@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantize_matches_pytorch_values_and_gradients(symmetric: bool) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 6)).astype(np.float32) * 3
    scale = rng.uniform(0.1, 0.5, 5).astype(np.float32)
    zp = np.zeros(5, np.int32) if symmetric else rng.integers(3, 12, 5).astype(np.int32)
    qmin, qmax = (-7, 7) if symmetric else (0, 15)
    tw = torch.tensor(w, requires_grad=True)
    ref = torch.fake_quantize_per_channel_affine(tw, torch.tensor(scale), torch.tensor(zp),
                                                 0, qmin, qmax)
    g = rng.standard_normal((5, 6)).astype(np.float32)
    (ref * torch.tensor(g)).sum().backward()
    ours_w = Tensor(w, requires_grad=True)
    ours = fake_quantize(ours_w, 4, symmetric=symmetric, scale=scale[:, None],
                         zero_point=zp[:, None])
    (ours * Tensor(g)).sum().backward()
    np.testing.assert_allclose(ours.data, ref.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ours_w.grad, tw.grad.numpy())


def _gpt() -> GPT:
    cfg = GPTConfig(vocab_size=23, context_length=8, n_layers=1, n_heads=2, d_model=16,
                    norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves",
                    ffn_hidden=32)
    return GPT(cfg, rng=np.random.default_rng(0))


def test_prepare_qat_trains_the_float_weights_and_convert_gives_the_same_model() -> None:
    m = _gpt()
    w_before = {n: x.weight for n, x in m.named_modules() if isinstance(x, Linear)}
    names = prepare_qat(m, 4, granularity="group", group_size=8)
    assert names == list(w_before)
    mods = dict(m.named_modules())
    assert all(isinstance(mods[n], QATLinear) and mods[n].weight is w_before[n] for n in names)
    ids = np.random.default_rng(2).integers(0, 23, (4, 8))
    logits = m(ids)
    F.cross_entropy(logits[:, :-1].reshape(-1, 23), ids[:, 1:].reshape(-1)).backward()
    assert all(np.abs(mods[n].weight.grad).sum() > 0 for n in names)
    qat_logits = m(ids).data
    assert convert(m) == names
    assert all(isinstance(x, QuantLinear) for n, x in m.named_modules() if n in names)
    np.testing.assert_allclose(m(ids).data, qat_logits, rtol=0, atol=1e-6)
