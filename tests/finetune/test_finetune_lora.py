"""LoRALinear against a PyTorch reference; init, merge, injection and parameter counts."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.finetune import (
    LoRALinear,
    inject_lora,
    lora_modules,
    merge_lora,
    trainable_parameters,
    unmerge_lora,
)
from spiral.models import GPT, GPTConfig
from spiral.nn.layers import Linear

pytestmark = pytest.mark.stage15


def tiny_gpt(seed: int = 0, dtype: type = np.float32) -> GPT:
    cfg = GPTConfig(vocab_size=11, context_length=8, n_layers=2, n_heads=2, d_model=16)
    return GPT(cfg, rng=np.random.default_rng(seed), dtype=dtype)


def test_forward_backward_match_torch_float64() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    lora = LoRALinear(Linear(7, 5, rng=rng, dtype=np.float64), r=3, lora_alpha=6.0, rng=rng)
    lora.lora_B.weight.data[...] = rng.standard_normal((5, 3))  # nonzero so A gets a gradient
    x_np = rng.standard_normal((2, 4, 7))
    x = Tensor(x_np, requires_grad=True)
    y = lora(x)
    g = rng.standard_normal(y.shape)
    (y * Tensor(g)).sum().backward()

    t = {k: torch.tensor(v, requires_grad=True) for k, v in {
        "x": x_np, "A": lora.lora_A.weight.data, "B": lora.lora_B.weight.data}.items()}
    W = torch.tensor(lora.base_layer.weight.data)
    b = torch.tensor(lora.base_layer.bias.data)
    ref = t["x"] @ W.T + b + 2.0 * (t["x"] @ t["A"].T) @ t["B"].T
    (ref * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(y.data, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.grad, t["x"].grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lora.lora_A.weight.grad, t["A"].grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(lora.lora_B.weight.grad, t["B"].grad.numpy(), rtol=1e-10)
    assert lora.base_layer.weight.grad is None and lora.base_layer.bias.grad is None


def test_init_A_kaiming_uniform_B_zero_and_shapes() -> None:
    lora = LoRALinear(Linear(400, 30, rng=np.random.default_rng(0)), r=64,
                      rng=np.random.default_rng(1))
    A, B = lora.lora_A.weight.data, lora.lora_B.weight.data
    assert A.shape == (64, 400) and B.shape == (30, 64)  # A down-projects, B up-projects
    assert not B.any()
    bound = 1 / np.sqrt(400)  # kaiming_uniform_(a=sqrt 5): gain sqrt(1/3) * sqrt(3/fan_in)
    assert np.abs(A).max() <= bound and np.abs(A).max() > 0.99 * bound
    assert abs(A.var() - bound ** 2 / 3) < 0.05 * bound ** 2 / 3  # U(-c, c) has variance c²/3


def test_zero_B_means_wrapped_model_equals_base_exactly() -> None:
    ids = np.random.default_rng(3).integers(0, 11, (2, 8))
    base = tiny_gpt()
    before = base(ids).data.copy()
    inject_lora(base, r=4, lora_alpha=8, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(base(ids).data, before)


def test_only_adapters_get_gradients_in_a_gpt() -> None:
    model = tiny_gpt()
    inject_lora(model, r=2, rng=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 11, (2, 8))
    model(ids).sum().backward()
    for name, p in model.named_parameters():
        is_adapter = ".lora_A." in name or ".lora_B." in name
        assert p.requires_grad == is_adapter, name
        assert (p.grad is not None) == is_adapter, name
    assert all(m.lora_A.weight.grad is not None and not m.lora_A.weight.grad.any()
               for _, m in lora_modules(model))  # B = 0 at init: A's first gradient is zero
    assert any(m.lora_B.weight.grad.any() for _, m in lora_modules(model))


def test_merged_equals_unmerged_within_float32_rounding() -> None:
    model = tiny_gpt()
    inject_lora(model, r=4, lora_alpha=16, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 11, (4, 8))
    base_out = model(ids).data.astype(np.float64)
    for _, m in lora_modules(model):
        m.lora_B.weight.data[...] = 0.05 * rng.standard_normal(m.lora_B.weight.shape)
    unmerged = model(ids).data.astype(np.float64)
    weights = {n: m.base_layer.weight.data.copy() for n, m in lora_modules(model)}
    merge_lora(model)
    merged = model(ids).data.astype(np.float64)
    rel = np.abs(merged - unmerged).max() / np.abs(unmerged).max()
    assert rel < 1e-6, rel
    assert np.abs(unmerged - base_out).max() > 1e-3  # the adapter really changes the output
    unmerge_lora(model)
    for n, m in lora_modules(model):
        np.testing.assert_allclose(m.base_layer.weight.data, weights[n], rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="not merged"):
        unmerge_lora(model)


def test_parameter_count_is_r_times_d_plus_k() -> None:
    model = tiny_gpt()
    _, total_before = trainable_parameters(model)
    names = inject_lora(model, r=3, rng=np.random.default_rng(0))
    assert names == [f"blocks.{i}.{s}" for i in range(2)
                     for s in ("attn.qkv_proj", "attn.out_proj", "ffn.fc", "ffn.proj")]
    expected = sum(3 * (m.in_features + m.out_features) for _, m in lora_modules(model))
    trainable, total = trainable_parameters(model)
    assert trainable == expected and total == total_before + expected
    assert expected == 2 * 3 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))


def test_target_patterns_follow_peft_rules_and_bad_input_is_clear() -> None:
    model = tiny_gpt()
    assert inject_lora(model, r=2, target_modules=r"blocks\.0\.attn\..*_proj",
                       rng=np.random.default_rng(0)) == ["blocks.0.attn.qkv_proj",
                                                         "blocks.0.attn.out_proj"]
    with pytest.raises(ValueError, match="no Linear module matches"):
        inject_lora(tiny_gpt(), target_modules=["q_proj"])
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(Linear(3, 3), r=0)
    with pytest.raises(TypeError, match="wraps a spiral Linear"):
        LoRALinear(model, r=2)  # type: ignore[arg-type]


def test_second_injection_never_wraps_adapters_and_lora_training_lowers_the_loss() -> None:
    from spiral.nn import functional as F
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW

    model = tiny_gpt()
    inject_lora(model, r=4, lora_alpha=8, target_modules=["qkv_proj"],
                rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no Linear module matches"):
        inject_lora(model, target_modules=r".*lora_[AB]|.*base_layer")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 11, (8, 9))
    opt = AdamW(param_groups(model, 0.0), lr=1e-2)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2 * 2  # A and B, two layers

    def loss() -> Tensor:
        logits = model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 11), ids[:, 1:].reshape(-1))

    first = float(loss().data)
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().data) < first - 0.05


def test_lora_dropout_acts_on_the_adapter_path_only_in_training() -> None:
    rng = np.random.default_rng(0)
    lora = LoRALinear(Linear(8, 6, rng=rng), r=2, lora_dropout=0.5, rng=rng)
    lora.lora_B.weight.data[...] = 1.0
    x = Tensor(np.ones((4, 8), dtype=np.float32))
    assert not np.allclose(lora(x).data, lora(x).data)  # a new mask each call
    lora.eval()
    np.testing.assert_array_equal(lora(x).data, lora(x).data)
    h = x.data @ lora.lora_A.weight.data.T
    want = lora.base_layer(x).data + lora.scaling * h @ lora.lora_B.weight.data.T
    np.testing.assert_allclose(lora(x).data, want, rtol=1e-6)
