"""NF4 codes vs the QLoRA paper, the absmax block rule, packing, error vs int4, QLoRA grads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.finetune import LoRALinear, lora_modules, trainable_parameters
from spiral.finetune.nf4 import (
    NF4,
    NF4LoRALinear,
    absmax_int4_roundtrip,
    dequantize_nf4,
    inject_qlora,
    normal_ppf,
    quantize_nf4,
    unpack,
)
from spiral.models import GPT, GPTConfig
from spiral.nn.layers import Linear

pytestmark = pytest.mark.stage15

# Dettmers et al. (2023), QLoRA, Appendix E: the NF4 data type's 16 values (float32).
PUBLISHED = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
             -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
             0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
             0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]


def test_code_values_equal_published_to_1e_6() -> None:
    assert NF4.shape == (16,) and np.all(np.diff(NF4) > 0)
    np.testing.assert_allclose(NF4, PUBLISHED, rtol=0, atol=1e-6)
    assert NF4[7] == 0.0 and NF4[0] == -1.0 and NF4[-1] == 1.0
    assert normal_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-12)


def test_absmax_block_rule() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 64 * 4 + 10)).astype(np.float32)  # last block is partial
    q = quantize_nf4(w, blocksize=64)
    d = dequantize_nf4(q)
    assert d.shape == w.shape and d.dtype == np.float32
    flat_w, flat_d = w.ravel(), d.ravel()
    for start in range(0, w.size, 64):
        bw, bd = flat_w[start:start + 64], flat_d[start:start + 64]
        c = np.abs(bw).max()
        k = np.abs(bw).argmax()
        scale = np.abs(bd[k])  # the block's (double-dequantized) scale, read off the absmax
        assert scale == pytest.approx(c, rel=2e-2)  # 8-bit scales: small relative error
        ratios = bd / scale
        assert np.allclose(ratios, NF4[np.abs(ratios[:, None] - NF4).argmin(1)], atol=1e-6)
        chosen = np.abs(bw[:, None] / c - NF4).argmin(1)  # the code nearest w / c, exact c
        assert NF4[chosen[k]] in (-1.0, 1.0)  # the absmax element maps to ±1
        np.testing.assert_allclose(ratios, NF4[chosen], atol=1e-5)


def test_packing_two_codes_per_byte_and_size() -> None:
    w = np.random.default_rng(1).standard_normal(64 * 256 * 2).astype(np.float32)
    q = quantize_nf4(w)
    assert q.packed.dtype == np.uint8 and q.packed.size == w.size // 2
    codes = unpack(q.packed)
    assert codes.max() <= 15 and codes.size == w.size
    assert q.qscale.dtype == np.int8 and q.qscale.size == w.size // 64
    assert q.scale_absmax.size == 2  # 512 scales in blocks of 256
    bits = 8 * q.nbytes() / w.size
    assert bits == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-3)


def test_nf4_error_below_symmetric_int4_on_gaussian_weights() -> None:
    w = 0.02 * np.random.default_rng(2).standard_normal((256, 256)).astype(np.float32)
    err_nf4 = np.mean((dequantize_nf4(quantize_nf4(w)) - w) ** 2)
    err_int4 = np.mean((absmax_int4_roundtrip(w) - w) ** 2)
    assert err_nf4 < err_int4
    with pytest.raises(ValueError, match="empty"):
        quantize_nf4(np.zeros(0))


def test_qlora_adapter_gradients_equal_lora_on_the_dequantized_base() -> None:
    rng = np.random.default_rng(3)
    lin = Linear(128, 48, rng=rng)
    q = NF4LoRALinear(lin, r=4, lora_alpha=8, rng=np.random.default_rng(4))
    q.lora_B.weight.data[...] = 0.1 * rng.standard_normal((48, 4))
    deq = Linear(128, 48)
    deq.weight.data[...] = q.base_layer.dequantized_weight()
    deq.bias.data[...] = lin.bias.data
    ref = LoRALinear(deq, r=4, lora_alpha=8)
    ref.lora_A.weight.data[...] = q.lora_A.weight.data
    ref.lora_B.weight.data[...] = q.lora_B.weight.data
    x_np = rng.standard_normal((5, 128)).astype(np.float32)
    outs = []
    for layer in (q, ref):
        x = Tensor(x_np, requires_grad=True)
        y = layer(x)
        (y * y).sum().backward()
        outs.append((y.data, x.grad, layer.lora_A.weight.grad, layer.lora_B.weight.grad))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert not any(p.requires_grad for p in q.base_layer.parameters())
    assert q.base_layer.bias is not None and q.base_layer.bias.grad is None
    assert not np.allclose(q.base_layer.dequantized_weight(), lin.weight.data, atol=1e-4)
    with pytest.raises(NotImplementedError, match="requantize"):
        q.merge()


def test_inject_qlora_in_a_gpt_trains_only_adapters() -> None:
    cfg = GPTConfig(vocab_size=11, context_length=8, n_layers=2, n_heads=2, d_model=64)
    model = GPT(cfg, rng=np.random.default_rng(0))
    names = inject_qlora(model, r=2, rng=np.random.default_rng(1))
    assert len(names) == 8 and all(isinstance(m, NF4LoRALinear) for _, m in lora_modules(model))
    model(np.zeros((1, 8), dtype=np.int64)).sum().backward()
    trainable, _ = trainable_parameters(model)
    assert trainable == sum(2 * (m.in_features + m.out_features) for _, m in lora_modules(model))
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())


def test_adapter_from_lora_loads_onto_a_qlora_base(tmp_path: Path) -> None:
    from spiral.finetune import inject_lora, load_adapter, save_adapter

    cfg = GPTConfig(vocab_size=11, context_length=8, n_layers=1, n_heads=2, d_model=64)
    lora = GPT(cfg, rng=np.random.default_rng(0))
    inject_lora(lora, r=2, rng=np.random.default_rng(1))
    for _, m in lora_modules(lora):
        m.lora_B.weight.data[...] = 0.1
    path = save_adapter(lora, tmp_path / "a.safetensors")
    qlora = GPT(cfg, rng=np.random.default_rng(0))
    inject_qlora(qlora, r=2, rng=np.random.default_rng(5))
    load_adapter(qlora, path)
    for (_, a), (_, b) in zip(lora_modules(lora), lora_modules(qlora)):
        np.testing.assert_array_equal(a.lora_A.weight.data, b.lora_A.weight.data)
    ids = np.random.default_rng(2).integers(0, 11, (1, 8))
    gap = np.abs(lora(ids).data - qlora(ids).data).max()
    assert 0 < gap < 0.1 * np.abs(lora(ids).data).max()  # the same model up to 4-bit rounding


def test_first_code_goes_in_the_high_nibble() -> None:
    w = np.zeros(64, dtype=np.float32)
    w[0], w[1] = -1.0, 1.0  # codes 0 and 15; everything else the zero code 7
    q = quantize_nf4(w)
    assert q.packed[0] == 0x0F and q.packed[1] == 0x77
    np.testing.assert_array_equal(unpack(q.packed)[:4], [0, 15, 7, 7])
    np.testing.assert_allclose(dequantize_nf4(q)[:3], [-1.0, 1.0, 0.0], atol=1e-6)
