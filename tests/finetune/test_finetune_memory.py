"""Fine-tuning memory: the derivation (stage 11's graph, rewritten per method) vs the profiler."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck
from spiral.finetune import freeze, inject_lora, inject_qlora, trainable_parameters
from spiral.finetune.lora import LoRAFn
from spiral.finetune.memory import (
    base_trainable,
    predict_finetune_memory,
    profile_finetune_step,
)
from spiral.finetune.nf4 import nf4_nbytes, quantize_nf4
from spiral.models import GPT, GPTConfig
from spiral.nn.layers import Linear
from spiral.nn.module import param_groups
from spiral.optim import AdamW

pytestmark = pytest.mark.stage15

LLAMA = dict(vocab_size=256, context_length=32, n_layers=2, n_heads=4, n_kv_heads=2,
             d_model=64, norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves")


def prepared(method: str, cfg: GPTConfig) -> GPT:
    model = GPT(cfg, rng=np.random.default_rng(0))
    if method == "lora":
        inject_lora(model, r=4, lora_alpha=8, rng=np.random.default_rng(1))
    elif method == "qlora":
        inject_qlora(model, r=4, lora_alpha=8, rng=np.random.default_rng(1))
    elif method == "freeze":
        freeze(model, ["tok_emb", "blocks.0"])
    return model


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "qlora"])
@pytest.mark.parametrize("ffn_type", ["swiglu", "gelu"])
def test_predicted_peak_within_5_percent_of_the_profiler(method: str, ffn_type: str) -> None:
    cfg = GPTConfig(**{**LLAMA, "ffn_type": ffn_type})  # type: ignore[arg-type]
    model = prepared(method, cfg)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (3, 32)), rng.integers(0, 256, (3, 32))
    measured = profile_finetune_step(model, (x, y), AdamW(param_groups(model, 0.1), lr=1e-3))
    pred = predict_finetune_memory(cfg, 3, 32, method, r=4, freeze_blocks=1)
    assert abs(pred.peak_visible / measured.peak - 1) < 0.05, (pred.peak_visible, measured.peak)
    trainable, _ = trainable_parameters(model)
    assert pred.optimizer_state == 8 * trainable  # AdamW: two fp32 moments per trainable number
    assert measured.peak_by_tag["optimizer_state"] == pred.optimizer_state
    assert abs(measured.peak_by_tag["param"] - pred.params) <= 4 * 16  # NF4's scale means


def test_methods_order_and_qlora_weight_bytes() -> None:
    cfg = GPTConfig(**LLAMA)  # type: ignore[arg-type]
    peaks = {m: predict_finetune_memory(cfg, 1, 32, m, r=4, freeze_blocks=1)
             for m in ("full", "freeze", "lora", "qlora")}
    assert peaks["qlora"].params < peaks["lora"].params < 1.1 * peaks["full"].params
    assert peaks["lora"].optimizer_state < 0.2 * peaks["full"].optimizer_state
    assert peaks["qlora"].peak_visible < peaks["lora"].peak_visible < peaks["full"].peak_visible
    w = np.random.default_rng(0).standard_normal((96, 64 * 5 + 3)).astype(np.float32)
    assert nf4_nbytes(w.size) == quantize_nf4(w).nbytes()


def test_base_trainable_rules() -> None:
    assert base_trainable("full")("tok_emb.weight")
    assert not base_trainable("lora")("blocks.1.ffn.w1.weight")
    rule = base_trainable("freeze", freeze_blocks=2)
    assert not rule("tok_emb.weight") and not rule("blocks.1.ln1.weight")
    assert rule("blocks.2.attn.out_proj.weight") and rule("final_norm.weight")
    with pytest.raises(ValueError, match="unknown method"):
        base_trainable("prefix")


def test_fused_lora_function_passes_gradcheck_with_separate_dropout_input() -> None:
    rng = np.random.default_rng(0)

    def t(*shape: int) -> Tensor:
        return Tensor(rng.standard_normal(shape), requires_grad=True)

    x, xa, w, b, a, bb = t(2, 3, 5), t(2, 3, 5), t(4, 5), t(4), t(2, 5), t(4, 2)
    assert gradcheck(lambda *z: LoRAFn.apply(*z, 1.5), [x, xa, w, b, a, bb])
    assert gradcheck(lambda *z: LoRAFn.apply(z[0], None, *z[1:], 0.5), [x, w, b, a, bb])


def test_frozen_linear_weight_gets_no_gradient_but_its_bias_can() -> None:
    rng = np.random.default_rng(1)
    lin = Linear(5, 3, rng=rng, dtype=np.float64)
    lin.weight.requires_grad_(False)
    x = Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    (lin(x) ** 2).sum().backward()
    y = x.data @ lin.weight.data.T + lin.bias.data
    assert lin.weight.grad is None
    np.testing.assert_allclose(lin.bias.grad, 2 * y.sum(0), rtol=1e-12)
    np.testing.assert_allclose(x.grad, 2 * y @ lin.weight.data, rtol=1e-12)
