"""Freezing by name pattern: no gradient, no optimizer slot or state; discriminative groups."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.finetune import (
    discriminative_param_groups,
    freeze,
    frozen_parameters,
    layerwise_lr,
    unfreeze,
)
from spiral.models import GPT, GPTConfig
from spiral.nn.module import param_groups
from spiral.optim import AdamW

pytestmark = pytest.mark.stage15


def tiny_gpt() -> GPT:
    cfg = GPTConfig(vocab_size=11, context_length=8, n_layers=3, n_heads=2, d_model=16)
    return GPT(cfg, rng=np.random.default_rng(0))


def loss(model: GPT) -> object:
    ids = np.random.default_rng(1).integers(0, 11, (2, 8))
    return (model(ids) ** 2).mean()


def test_frozen_parameter_gets_no_gradient_and_no_optimizer_state() -> None:
    model = tiny_gpt()
    names = freeze(model, ["tok_emb", "pos_emb", "blocks.[0-1]"])
    assert names and all(n.startswith(("tok_emb", "pos_emb", "blocks.0.", "blocks.1."))
                         for n in names)
    assert frozen_parameters(model) == names
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    opt = AdamW(param_groups(model, 0.1), lr=1e-2)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    loss(model).backward()  # type: ignore[attr-defined]
    opt.step()
    for n, p in model.named_parameters():
        frozen = n in names
        assert (id(p) in in_opt) != frozen, n
        assert (p.grad is None) == frozen, n
        assert (id(p) in opt.state and bool(opt.state[id(p)])) != frozen, n
        assert np.array_equal(p.data, before[n]) == frozen, n


def test_unfreeze_and_pattern_errors() -> None:
    model = tiny_gpt()
    freeze(model, "blocks.*.attn")
    assert {n.split(".")[2] for n in frozen_parameters(model)} == {"attn"}
    unfreeze(model, "blocks.2.attn")
    assert not any(n.startswith("blocks.2.") for n in frozen_parameters(model))
    with pytest.raises(ValueError, match="no module name matches"):
        freeze(model, "decoder.*")


def test_discriminative_groups_follow_ulmfit_schedule() -> None:
    model = tiny_gpt()
    freeze(model, "tok_emb")
    rate = layerwise_lr(3, lr=1e-3, decay=0.5)
    groups = discriminative_param_groups(model, rate, weight_decay=0.1)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(lr_of) == len(trainable)  # every trainable parameter once, frozen ones never
    expect = {"blocks.0.attn.qkv_proj.weight": (2.5e-4, 0.1), "blocks.2.ffn.fc.weight": (1e-3, 0.1),
              "blocks.1.ln1.weight": (5e-4, 0.0), "pos_emb.weight": (1.25e-4, 0.0)}
    params = dict(model.named_parameters())
    for n, (lr, wd) in expect.items():
        assert lr_of[id(params[n])] == pytest.approx((lr, wd)), n
    AdamW(groups, lr=1.0)  # the optimizer accepts the groups (no frozen tensors inside)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="every parameter is frozen"):
        discriminative_param_groups(model, rate, 0.1)


def test_recipe_optimizer_uses_discriminative_groups_when_asked() -> None:
    from spiral.finetune.recipe import FinetuneConfig, make_optimizer

    model = tiny_gpt()
    flat = make_optimizer(model, FinetuneConfig("full"), lr=1e-3, weight_decay=0.1)
    assert {g["lr"] for g in flat.param_groups} == {1e-3}
    opt = make_optimizer(model, FinetuneConfig("full", lr_decay=0.5), lr=1e-3, weight_decay=0.1)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["blocks.2.ffn.fc.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(params["blocks.0.ffn.fc.weight"])] == pytest.approx(2.5e-4)
    assert lr_of[id(params["tok_emb.weight"])] == pytest.approx(1.25e-4)
