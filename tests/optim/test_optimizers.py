"""spiral.optim optimizers against torch.optim: 100 steps on identical gradients, float64."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.optim import SGD, Adam, AdamW, RMSprop

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage5

SHAPES = [(3, 4), (5,), ()]
N_STEPS = 100


def _pair(seed: int) -> tuple[list[Tensor], list[object], list[list[np.ndarray]]]:
    """Identical float64 parameters for spiral and torch, and a fixed gradient sequence."""
    rng = np.random.default_rng(seed)
    inits = [rng.normal(size=s) for s in SHAPES]
    ours = [Tensor(x.copy(), requires_grad=True) for x in inits]
    theirs = [torch.tensor(x.copy(), requires_grad=True) for x in inits]
    # one gradient per step per parameter; a quarter of them missing (None) at random steps
    grads = [[rng.normal(size=s) * rng.uniform(0.1, 3.0) for s in SHAPES] for _ in range(N_STEPS)]
    return ours, theirs, grads


def _run(make_ours, make_theirs, seed: int, rtol: float = 1e-10) -> None:
    ours, theirs, grads = _pair(seed)
    opt, ref = make_ours(ours), make_theirs(theirs)
    for step in range(N_STEPS):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            # parameter 1 skips every third step: a missing gradient must not update it
            if i == 1 and step % 3 == 2:
                p.grad, q.grad = None, None
            else:
                p.grad = grads[step][i].copy()
                q.grad = torch.tensor(grads[step][i].copy())
        opt.step()
        ref.step()
        for p, q in zip(ours, theirs):
            expected = q.detach().numpy()
            scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
            np.testing.assert_allclose(p.data, expected, rtol=rtol, atol=rtol * scale,
                                       err_msg=f"step {step}")


lrs = st.floats(1e-4, 0.3)
wds = st.sampled_from([0.0, 1e-3, 0.1])


@settings(deadline=None, max_examples=15)
@given(lr=lrs, momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
       dampening=st.sampled_from([0.0, 0.1, 0.5]), nesterov=st.booleans(), wd=wds,
       maximize=st.booleans(), seed=st.integers(0, 2**16))
def test_sgd_matches_torch(lr, momentum, dampening, nesterov, wd, maximize, seed) -> None:
    if nesterov and (momentum == 0 or dampening != 0):
        with pytest.raises(ValueError):
            SGD([Tensor([1.0], requires_grad=True)], lr=lr, momentum=momentum,
                dampening=dampening, nesterov=True)
        return
    kw = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd,
              nesterov=nesterov, maximize=maximize)
    _run(lambda ps: SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw), seed)


@settings(deadline=None, max_examples=15)
@given(lr=st.floats(1e-4, 0.05), alpha=st.sampled_from([0.9, 0.99, 0.5]),
       eps=st.sampled_from([1e-8, 1e-3]), momentum=st.sampled_from([0.0, 0.9]),
       centered=st.booleans(), wd=wds, seed=st.integers(0, 2**16))
def test_rmsprop_matches_torch(lr, alpha, eps, momentum, centered, wd, seed) -> None:
    kw = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=wd, momentum=momentum,
              centered=centered)
    _run(lambda ps: RMSprop(ps, **kw), lambda ps: torch.optim.RMSprop(ps, **kw), seed)


adam_kwargs = dict(lr=st.floats(1e-4, 0.1), beta1=st.sampled_from([0.0, 0.5, 0.9, 0.95]),
                   beta2=st.sampled_from([0.9, 0.99, 0.999]),
                   eps=st.sampled_from([1e-8, 1e-6, 1e-3]), amsgrad=st.booleans(),
                   maximize=st.booleans(), seed=st.integers(0, 2**16))


@settings(deadline=None, max_examples=15)
@given(wd=wds, **adam_kwargs)
def test_adam_matches_torch(lr, beta1, beta2, eps, amsgrad, maximize, wd, seed) -> None:
    kw = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd, amsgrad=amsgrad,
              maximize=maximize)
    _run(lambda ps: Adam(ps, **kw), lambda ps: torch.optim.Adam(ps, **kw), seed)


@settings(deadline=None, max_examples=15)
@given(wd=st.sampled_from([0.0, 1e-2, 0.1, 1.0]), **adam_kwargs)
def test_adamw_matches_torch(lr, beta1, beta2, eps, amsgrad, maximize, wd, seed) -> None:
    kw = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd, amsgrad=amsgrad,
              maximize=maximize)
    _run(lambda ps: AdamW(ps, **kw), lambda ps: torch.optim.AdamW(ps, **kw), seed)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW"])
def test_defaults_match_torch(name: str) -> None:
    import inspect

    ours = inspect.signature(getattr(__import__("spiral.optim", fromlist=[name]), name))
    theirs = inspect.signature(getattr(torch.optim, name))
    for pname, param in ours.parameters.items():
        if pname == "params":
            continue
        assert pname in theirs.parameters, pname
        ref = theirs.parameters[pname].default
        assert param.default == ref, (pname, param.default, ref)


def test_param_groups_per_group_lr_and_weight_decay(rng: np.random.Generator) -> None:
    a0, b0 = rng.normal(size=(4,)), rng.normal(size=(2, 3))
    ours = [Tensor(a0.copy(), requires_grad=True), Tensor(b0.copy(), requires_grad=True)]
    theirs = [torch.tensor(a0.copy(), requires_grad=True),
              torch.tensor(b0.copy(), requires_grad=True)]
    groups = lambda ps: [{"params": [ps[0]], "lr": 0.1, "weight_decay": 0.5},  # noqa: E731
                         {"params": [ps[1]]}]
    opt = AdamW(groups(ours), lr=0.01)
    ref = torch.optim.AdamW(groups(theirs), lr=0.01)
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 0.5
    for _ in range(10):
        for p, q in zip(ours, theirs):
            g = rng.normal(size=p.shape)
            p.grad, q.grad = g.copy(), torch.tensor(g)
        opt.step()
        ref.step()
        opt.param_groups[0]["lr"] *= 0.9             # what a scheduler does
        ref.param_groups[0]["lr"] *= 0.9
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12)


def test_state_dict_round_trip_resumes_exactly(rng: np.random.Generator) -> None:
    x0 = rng.normal(size=(3, 3))
    grads = [rng.normal(size=(3, 3)) for _ in range(8)]
    p = Tensor(x0.copy(), requires_grad=True)
    opt = Adam([p], lr=0.05, amsgrad=True)
    for g in grads[:4]:
        p.grad = g.copy()
        opt.step()
    saved = opt.state_dict()
    # JSON-friendly: arrays become lists, indices become strings; loading accepts both
    as_json = json.loads(json.dumps(saved, default=lambda a: a.tolist()))
    assert set(as_json["state"]["0"]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    q = Tensor(p.data.copy(), requires_grad=True)
    resumed = Adam([q], lr=1.0)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == 0.05
    assert resumed.param_groups[0]["betas"] == (0.9, 0.999)
    for g in grads[4:]:
        p.grad, q.grad = g.copy(), g.copy()
        opt.step()
        resumed.step()
    np.testing.assert_array_equal(p.data, q.data)
    # the snapshot is a copy: later steps did not change it
    assert saved["state"][0]["step"] == 4


def test_float32_stays_float32_in_place(rng: np.random.Generator) -> None:
    for make in (lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                 lambda ps: RMSprop(ps, momentum=0.9, centered=True),
                 lambda ps: Adam(ps, amsgrad=True, weight_decay=0.1), AdamW):
        p = Tensor(rng.normal(size=(5, 5)).astype(np.float32), requires_grad=True)
        buffer = p.data
        opt = make([p])
        for _ in range(3):
            p.grad = rng.normal(size=(5, 5)).astype(np.float32)
            grad = p.grad
            before = grad.copy()
            opt.step()
            np.testing.assert_array_equal(grad, before)  # the gradient is not modified
        assert p.data is buffer and p.data.dtype == np.float32
        for s in opt.state[id(p)].values():
            if isinstance(s, np.ndarray):
                assert s.dtype == np.float32


def test_zero_grad() -> None:
    p = Tensor(np.ones(3), requires_grad=True)
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(3)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


def test_rejects_bad_arguments() -> None:
    p = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError):
        SGD([p], lr=-1.0)
    with pytest.raises(ValueError):
        Adam([p], betas=(1.0, 0.999))
    with pytest.raises(ValueError):
        SGD([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError):
        SGD(p)


def test_step_with_closure_under_no_grad() -> None:
    """step(closure) re-evaluates the loss with gradients on, even inside no_grad (as torch)."""
    from spiral.autograd import no_grad

    p = Tensor(np.array([3.0, -1.0]), requires_grad=True)
    opt = SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with no_grad():
        loss = opt.step(closure)
    assert float(loss.item()) == pytest.approx(10.0)
    np.testing.assert_allclose(p.data, np.array([3.0, -1.0]) * (1 - 0.2))
