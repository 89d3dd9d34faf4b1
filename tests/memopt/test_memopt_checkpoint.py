"""Stage 12: gradient checkpointing recomputes exactly (bit-identical gradients, dropout too)."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor, no_grad
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.nn.checkpoint import checkpoint, checkpoint_sequential, segment_sizes
from spiral.nn.layers import Dropout, Linear
from spiral.nn.transformer import Block

pytestmark = pytest.mark.stage12


def _gpt_grads(dropout: float, **kw: object) -> tuple[float, list[np.ndarray], float]:
    c = GPTConfig.preset("baby", 23, n_layers=5, d_model=32, n_heads=4, context_length=16,
                         dropout=dropout, **kw)
    m = GPT(c, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, 23, (3, 16))
    loss = F.cross_entropy(m(x), x)
    loss.backward()
    next_draw = float(m.drop.rng.random())  # the generator's state after the step
    return float(loss.item()), [p.grad for p in m.parameters()], next_draw


@pytest.mark.parametrize("mode", ["blocks", "sqrt", "selective"])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gpt_checkpointing_is_bit_identical(mode: str, dropout: float) -> None:
    loss0, g0, r0 = _gpt_grads(dropout)
    loss1, g1, r1 = _gpt_grads(dropout, checkpoint=mode)
    assert loss1 == loss0
    assert len(g1) == len(g0)
    for a, b in zip(g0, g1):
        assert np.array_equal(a, b)
    assert r1 == r0  # the recompute replayed the generator, then restored it


def test_without_rng_replay_dropout_differs() -> None:
    rng = np.random.default_rng(3)
    drop, lin = Dropout(0.5, rng=rng), Linear(6, 6, rng=np.random.default_rng(4))

    def f(z: Tensor) -> Tensor:
        return lin(drop(z))

    grads = []
    for preserve in (True, False):
        rng.bit_generator.state = np.random.default_rng(3).bit_generator.state
        lin.weight.grad = None
        x = Tensor(np.ones((4, 6), dtype=np.float32), requires_grad=True)
        checkpoint(f, x, preserve_rng_state=preserve, rngs=[rng]).sum().backward()
        grads.append(lin.weight.grad.copy())
    rng.bit_generator.state = np.random.default_rng(3).bit_generator.state
    lin.weight.grad = None
    x = Tensor(np.ones((4, 6), dtype=np.float32), requires_grad=True)
    f(x).sum().backward()
    assert np.array_equal(grads[0], lin.weight.grad)
    assert not np.array_equal(grads[1], lin.weight.grad)  # a fresh mask in the recompute


def test_checkpoint_saves_nothing_inside_and_recomputes_once() -> None:
    calls = []
    lin = Linear(5, 5, rng=np.random.default_rng(0))

    def f(z: Tensor) -> Tensor:
        calls.append(1)
        return lin(z).tanh()

    x = Tensor(np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32),
               requires_grad=True)
    y = checkpoint(f, x)
    assert y._parents == (x,)  # one node: the segment's activations are not in the graph
    y.sum().backward()
    assert len(calls) == 2  # forward + one recompute
    with no_grad():
        checkpoint(f, x)
    assert len(calls) == 3  # no graph wanted: run once, plainly


def test_checkpoint_sequential_matches_plain() -> None:
    blocks = [Block(8, 2, rng=np.random.default_rng(i)) for i in range(4)]
    x0 = np.random.default_rng(9).standard_normal((2, 5, 8)).astype(np.float32)
    out = []
    for segs in (None, 1, 2, 4):
        for b in blocks:
            b.zero_grad()
        x = Tensor(x0, requires_grad=True)
        h = x
        if segs is None:
            for b in blocks:
                h = b(h)
        else:
            h = checkpoint_sequential(blocks, segs, h)
        (h * h).sum().backward()
        out.append([x.grad] + [p.grad for b in blocks for p in b.parameters()])
    for other in out[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(out[0], other))


def test_segment_sizes_and_errors() -> None:
    assert segment_sizes(16, "sqrt") == [4, 4, 4, 4]
    assert segment_sizes(6, "sqrt") == [3, 3]
    assert segment_sizes(5, "blocks") == [1] * 5
    assert segment_sizes(5, "none") == [] == segment_sizes(5, "selective")
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        segment_sizes(4, "every")
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        GPTConfig(vocab_size=5, checkpoint="all")
    with pytest.raises(ValueError, match="segments must be in"):
        checkpoint_sequential([], 2, Tensor(np.ones(2)))
    with pytest.raises(TypeError, match="must be callable"):
        checkpoint(3, Tensor(np.ones(2)))  # type: ignore[arg-type]


def test_config_records_new_fields_only_when_set() -> None:
    base = GPTConfig.preset("baby", 10)
    assert "checkpoint" not in base.to_dict() and "attention" not in base.to_dict()
    d = GPTConfig.preset("baby", 10, checkpoint="sqrt", attention="flash").to_dict()
    assert d["checkpoint"] == "sqrt" and d["attention"] == "flash"
    assert GPTConfig(**d) == GPTConfig.preset("baby", 10, checkpoint="sqrt", attention="flash")
