"""Learning-rate schedules against torch.optim.lr_scheduler."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.optim import (
    SGD,
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    ScheduleLR,
    StepLR,
    constant,
    cosine_with_warmup,
    linear_warmup,
    set_lr,
    step_decay,
)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage5


def _torch_lrs(make, base_lr: float, n: int) -> list[float]:
    """Learning rate used by torch at update k = 0..n-1 (optimizer.step then scheduler.step)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _our_lrs(make, base_lr: float, n: int) -> list[float]:
    opt = SGD([Tensor(np.zeros(1), requires_grad=True)], lr=base_lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        assert sched.get_last_lr() == [out[-1]]
        opt.step()
        sched.step()
    return out


@settings(deadline=None, max_examples=20)
@given(lr=st.floats(1e-5, 1.0), step_size=st.integers(1, 20), gamma=st.floats(0.05, 0.99),
       t_max=st.integers(1, 50), eta_ratio=st.floats(0.0, 0.5),
       start=st.floats(0.01, 1.0), total=st.integers(1, 30))
def test_schedulers_match_torch(lr, step_size, gamma, t_max, eta_ratio, start, total) -> None:
    sched = torch.optim.lr_scheduler
    n = 2 * t_max + 5
    pairs = [
        (lambda o: StepLR(o, step_size, gamma), lambda o: sched.StepLR(o, step_size, gamma)),
        (lambda o: LinearLR(o, start, 1.0, total), lambda o: sched.LinearLR(o, start, 1.0, total)),
        (lambda o: CosineAnnealingLR(o, t_max, eta_ratio * lr),
         lambda o: sched.CosineAnnealingLR(o, t_max, eta_ratio * lr)),
        (lambda o: LambdaLR(o, lambda k: 1.0 / (1 + k)),
         lambda o: sched.LambdaLR(o, lambda k: 1.0 / (1 + k))),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(_our_lrs(ours, lr, n), _torch_lrs(theirs, lr, n),
                                   rtol=1e-10, atol=1e-14 * lr)


@settings(deadline=None, max_examples=20)
@given(lr=st.floats(1e-5, 1.0), warmup=st.integers(2, 20), decay=st.integers(1, 50),
       min_ratio=st.floats(0.0, 0.5), step_size=st.integers(1, 20), gamma=st.floats(0.05, 0.99))
def test_schedules_match_torch(lr, warmup, decay, min_ratio, step_size, gamma) -> None:
    """Our closed-form callables against torch's built-in schedulers."""
    sched = torch.optim.lr_scheduler
    total = warmup + decay
    n = total + 10
    k = range(n)
    # linear warmup == LinearLR from 1/W to 1 over W - 1 steps
    ref = _torch_lrs(lambda o: sched.LinearLR(o, 1.0 / warmup, 1.0, warmup - 1), lr, n)
    np.testing.assert_allclose([linear_warmup(lr, warmup)(i) for i in k], ref, rtol=1e-10)
    # cosine with warmup == LinearLR then CosineAnnealingLR, switched at step W
    cos = cosine_with_warmup(lr, warmup, total, min_ratio * lr)
    ref = _torch_lrs(lambda o: sched.SequentialLR(
        o, [sched.LinearLR(o, 1.0 / warmup, 1.0, warmup - 1),
            sched.CosineAnnealingLR(o, decay, min_ratio * lr)], milestones=[warmup]), lr, total + 1)
    np.testing.assert_allclose([cos(i) for i in range(total + 1)], ref, rtol=1e-10,
                               atol=1e-14 * lr)
    assert all(cos(i) == min_ratio * lr for i in range(total + 1, n))
    # step decay == StepLR; constant == no scheduler
    ref = _torch_lrs(lambda o: sched.StepLR(o, step_size, gamma), lr, n)
    np.testing.assert_allclose([step_decay(lr, step_size, gamma)(i) for i in k], ref, rtol=1e-12)
    assert [constant(lr)(i) for i in k] == [lr] * n


def test_schedule_lr_and_set_lr_drive_every_group() -> None:
    a, b = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 5.0}], lr=1.0)
    schedule = cosine_with_warmup(0.1, warmup_steps=3, total_steps=10)
    sched = ScheduleLR(opt, schedule)
    seen = []
    for _ in range(12):
        seen.append(sched.get_last_lr())
        opt.step()
        sched.step()
    assert seen == [[schedule(i)] * 2 for i in range(12)]
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    state = sched.state_dict()
    other = ScheduleLR(SGD([Tensor(np.zeros(1), requires_grad=True)]), schedule)
    other.load_state_dict(state)
    assert other.last_epoch == sched.last_epoch == 12


@pytest.mark.parametrize("warmup,max_steps,min_ratio", [(10, 100, 0.1), (1, 50, 0.0), (25, 60, 0.5)])
def test_cosine_with_warmup_is_the_training_loops_multiplier(warmup, max_steps, min_ratio) -> None:
    """The shared loop (stage 4) multiplies base lrs by schedule(step); ours built with lr=1
    is exactly its default warmup + cosine multiplier."""
    from spiral.train import TrainConfig, lr_multiplier

    theirs = lr_multiplier(TrainConfig(max_steps=max_steps, warmup_steps=warmup,
                                       min_lr_ratio=min_ratio, schedule="cosine"))
    ours = cosine_with_warmup(1.0, warmup, max_steps, min_ratio)
    np.testing.assert_allclose([ours(k) for k in range(max_steps + 5)],
                               [theirs(k) for k in range(max_steps + 5)], rtol=1e-12, atol=1e-15)
