"""Stage 12: the combined memory model (checkpointing x flash x 16 bits) against the profiler."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.experiments.memopt.combined import (
    COMBOS,
    MasterAdamW,
    largest_batch,
    measure,
    predict,
)
from spiral.models.gpt import GPTConfig
from spiral.optim import AdamW
from spiral.profiling.memory import predict_training_memory

pytestmark = pytest.mark.stage12

CFG = GPTConfig(vocab_size=13, context_length=24, n_layers=3, n_heads=2, d_model=16)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("combo", COMBOS, ids=[c[0] for c in COMBOS])
def test_prediction_equals_the_profiler(combo: tuple[str, bool, bool, bool], B: int) -> None:
    _, ck, fa, mp = combo
    T = CFG.context_length
    assert abs(predict(CFG, B, T, ck, fa, mp) - measure(CFG, B, T, ck, fa, mp, seed=4)) <= 16


def test_plain_prediction_is_stage_11s_and_each_technique_saves() -> None:
    T = CFG.context_length
    plain = predict(CFG, 4, T, False, False, False)
    assert plain == predict_training_memory(CFG, 4, T, "adamw").peak_visible
    for _, ck, fa, mp in COMBOS[1:]:
        assert predict(CFG, 4, T, ck, fa, mp) < plain


def test_largest_batch_is_the_boundary() -> None:
    T, budget = CFG.context_length, 3 * 2**20
    for _, ck, fa, mp in COMBOS:
        b = largest_batch(CFG, T, budget, ck, fa, mp, max_batch=4096)
        assert predict(CFG, b, T, ck, fa, mp) <= budget < predict(CFG, b + 1, T, ck, fa, mp)
    assert largest_batch(CFG, T, 1000, False, False, False, max_batch=64) == 0


def test_master_adamw_equals_adamw_on_float32_weights() -> None:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 4)).astype(np.float32)
    grads = [rng.standard_normal((5, 4)).astype(np.float32) for _ in range(3)]
    a, b = Tensor(w0.copy(), requires_grad=True), Tensor(w0.copy(), requires_grad=True)
    ref, ours = AdamW([a], lr=1e-2), MasterAdamW([b], lr=1e-2)
    for g in grads:
        a.grad, b.grad = g.copy(), g.copy()
        ref.step()
        ours.step()
    np.testing.assert_allclose(b.data, a.data, rtol=1e-5, atol=1e-6)
    # in 16 bits the model holds the master weights rounded, the master keeps the rest
    h = Tensor(w0.astype(np.float16), requires_grad=True)
    opt = MasterAdamW([h], lr=1e-4)
    h.grad = grads[0].astype(np.float16)
    opt.step()
    master = opt.state[0]["master"]
    assert h.data.dtype == np.float16 and master.dtype == np.float32
    np.testing.assert_array_equal(h.data, master.astype(np.float16))
    assert not np.array_equal(master, master.astype(np.float16).astype(np.float32))
    opt.zero_grad()
    assert h.grad is None
