"""Stage 11: the profiler's hooks cost nothing when unused; largest batch; torch side by side."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor, hooks, no_grad
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.optim import AdamW
from spiral.profiling.memory import (
    MemoryProfiler,
    largest_batch,
    largest_context,
    predict_training_memory,
    verify_fit,
)

pytestmark = pytest.mark.stage11

TINY = GPTConfig(vocab_size=30, context_length=16, n_layers=1, n_heads=2, d_model=16)


def _step(model: GPT, B: int = 2, T: int = 8) -> None:
    r = np.random.default_rng(0)
    x, y = r.integers(0, 30, (B, T)), r.integers(0, 30, (B, T))
    F.cross_entropy(model(x), y).backward()


def test_no_hook_is_ever_called_without_a_profiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unused, the hooks are one empty-list test per tensor: no notify function runs."""
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a hook ran with no profiler attached")

    monkeypatch.setattr(hooks, "notify_alloc", boom)
    monkeypatch.setattr(hooks, "notify_grads", boom)
    assert not hooks._HOOKS
    _step(GPT(TINY, rng=np.random.default_rng(0)))  # forward and backward, no call


def test_profiler_detaches_and_sees_forward_and_backward() -> None:
    model = GPT(TINY, rng=np.random.default_rng(0))
    with MemoryProfiler() as prof:
        prof.phase = "forward"
        r = np.random.default_rng(0)
        loss = F.cross_entropy(model(r.integers(0, 30, (2, 8))), r.integers(0, 30, (2, 8)))
        prof.phase = "backward"
        loss.backward()
    assert not hooks._HOOKS
    phases = {e.phase for e in prof.timeline.events}
    assert phases == {"forward", "backward"}
    tags = {e.tag for e in prof.timeline.events}
    assert {"activation", "grad", "temporary"} <= tags
    assert prof.timeline.peak == max(e.live for e in prof.timeline.events)


def test_outside_a_graph_outputs_are_temporaries() -> None:
    with MemoryProfiler() as prof, no_grad():
        a = Tensor(np.ones((100,), dtype=np.float32))
        b = a * 2.0
        del b
    assert [e.tag for e in prof.timeline.events] == ["temporary"] * 3
    assert prof.timeline.events[-1].delta == -400 and a.data.nbytes == 400


def test_largest_batch_fits_and_one_more_does_not() -> None:
    lo = predict_training_memory(TINY, 5, 16).peak
    hi = predict_training_memory(TINY, 6, 16).peak
    budget = (lo + hi) // 2
    assert largest_batch(TINY, budget, 16) == 5
    check = verify_fit(TINY, budget, 5, 16)
    assert check["fits"] and check["next_exceeds"]
    assert largest_batch(TINY, 1000, 16) == 0  # not even one sequence
    assert 1 <= largest_context(TINY, budget, batch=5) <= 16
    with pytest.raises(ValueError, match="positive number of bytes"):
        largest_batch(TINY, 0)


@pytest.mark.slow
def test_torch_profiler_side_by_side() -> None:
    """torch's CPU memory timeline for the same model and step, tag by tag (the chapter's
    table): identical weights and Adam moments; torch saves less for backward."""
    torch = pytest.importorskip("torch")
    torch_gpt = pytest.importorskip("benchmarks.torch_gpt")
    from spiral.profiling.memory import profile_step, torch_step_peak

    c = GPTConfig.preset("baby", 65)
    r = np.random.default_rng(0)
    x, y = r.integers(0, 65, (8, 64)), r.integers(0, 65, (8, 64))
    tm = torch_gpt.TorchGPT(c)
    theirs = torch_step_peak(tm, x, y, torch.optim.AdamW(tm.parameters(), lr=1e-3))
    model = GPT(c, rng=np.random.default_rng(0))
    ours = profile_step(model, (x, y), AdamW(model.parameters(), lr=1e-3))
    assert theirs["peak_by_tag"]["param"] == ours.peak_by_tag["param"]
    # torch keeps a 4-byte step counter per parameter tensor beside m and v
    n_tensors = len(list(model.parameters()))
    assert theirs["peak_by_tag"]["optimizer_state"] == ours.peak_by_tag["optimizer_state"] \
        + 4 * n_tensors
    assert theirs["peak"] < ours.peak
