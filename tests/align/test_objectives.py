"""The alignment losses against PyTorch and finite differences (stage 16)."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.align.objectives import (
    bradley_terry_loss,
    clip_fraction,
    dpo_loss,
    explained_variance,
    log_sigmoid,
    ppo_clip_loss,
)
from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck

pytestmark = pytest.mark.stage16


def test_bradley_terry_loss_and_gradients_match_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w, ell = rng.normal(size=7) * 3, rng.normal(size=7) * 3
    a, b = Tensor(w, requires_grad=True), Tensor(ell, requires_grad=True)
    loss = bradley_terry_loss(a, b)
    loss.backward()
    ta = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(ell, requires_grad=True)
    tl = -torch.nn.functional.logsigmoid(ta - tb).mean()
    tl.backward()
    assert loss.item() == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-12)


def test_log_sigmoid_is_finite_and_has_slope_one_half_at_zero() -> None:
    x = Tensor(np.array([-800.0, 0.0, 800.0]), requires_grad=True)
    y = log_sigmoid(x)
    y.sum().backward()
    np.testing.assert_allclose(y.data, [-800.0, -np.log(2.0), 0.0], atol=1e-12)
    np.testing.assert_allclose(x.grad, [1.0, 0.5, 0.0], atol=1e-12)
    assert gradcheck(log_sigmoid, [Tensor(np.linspace(-5, 5, 9), requires_grad=True)])


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_loss_matches_the_reference_formula(loss_type: str) -> None:
    rng = np.random.default_rng(1)
    pw, pl, rw, rl = (rng.normal(size=6) * 2 for _ in range(4))
    beta = 0.3
    got = dpo_loss(Tensor(pw), Tensor(pl), rw, rl, beta, loss_type).item()
    h = (pw - rw) - (pl - rl)
    want = {"sigmoid": np.mean(np.logaddexp(0.0, -beta * h)),
            "ipo": np.mean((h - 1 / (2 * beta)) ** 2),
            "hinge": np.mean(np.maximum(0.0, 1 - beta * h))}[loss_type]
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_loss_gradient_by_finite_differences(loss_type: str) -> None:
    rng = np.random.default_rng(2)
    pw = Tensor(rng.normal(size=5), requires_grad=True)
    pl = Tensor(rng.normal(size=5), requires_grad=True)
    rw, rl = rng.normal(size=5), rng.normal(size=5)
    if loss_type == "hinge":  # keep every pair away from the kink at β h = 1
        h = (pw.data - rw) - (pl.data - rl)
        rw = rw + np.where(np.abs(0.5 * h - 1) < 0.2, 1.0, 0.0)
    weights = rng.random(5)
    assert gradcheck(lambda a, b: dpo_loss(a, b, rw, rl, 0.5, loss_type, weights=weights),
                     [pw, pl])


def test_dpo_sigmoid_is_bradley_terry_on_implicit_rewards() -> None:
    rng = np.random.default_rng(3)
    pw, pl, rw, rl = (rng.normal(size=4) for _ in range(4))
    beta = 0.7
    want = bradley_terry_loss(Tensor(beta * (pw - rw)), Tensor(beta * (pl - rl))).item()
    assert dpo_loss(Tensor(pw), Tensor(pl), rw, rl, beta).item() == pytest.approx(want)


def test_dpo_loss_rejects_bad_arguments() -> None:
    x = Tensor(np.zeros(2))
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, np.zeros(2), np.zeros(2), 0.1, "square")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, np.zeros(2), np.zeros(2), 0.0)


def test_ppo_clip_gradient_is_zero_outside_the_clip_region() -> None:
    eps = 0.2
    old = np.zeros((1, 6))
    # ratios: inside, above with A>0 (clipped), below with A<0 (clipped),
    # above with A<0 (not clipped: min picks the unclipped term), below with A>0 (same)
    log_ratio = np.log(np.array([[1.05, 1.5, 0.5, 1.5, 0.5, 0.95]]))
    adv = np.array([[1.0, 1.0, -1.0, -1.0, 1.0, -2.0]])
    mask = np.ones((1, 6))
    logp = Tensor(log_ratio.copy(), requires_grad=True)
    ppo_clip_loss(logp, old, adv, mask, eps).backward()
    g = np.asarray(logp.grad)[0]
    ratio = np.exp(log_ratio[0])
    assert g[1] == 0.0 and g[2] == 0.0                      # clipped: no gradient
    np.testing.assert_allclose(g[[0, 3, 4, 5]], -(ratio * adv[0])[[0, 3, 4, 5]] / 6)
    assert gradcheck(lambda t: ppo_clip_loss(t, old, adv, mask, eps),
                     [Tensor(log_ratio.copy(), requires_grad=True)])


def test_ppo_clip_loss_ignores_masked_tokens_and_diagnostics() -> None:
    logp = Tensor(np.array([[0.1, 5.0]]), requires_grad=True)
    mask = np.array([[1.0, 0.0]])
    ppo_clip_loss(logp, np.zeros((1, 2)), np.ones((1, 2)), mask).backward()
    assert np.asarray(logp.grad)[0, 1] == 0.0
    assert clip_fraction(np.array([[0.1, 5.0]]), np.zeros((1, 2)), mask) == 0.0
    assert clip_fraction(np.array([[0.5, 5.0]]), np.zeros((1, 2)), mask) == 1.0
    r = np.array([[1.0, 2.0, 3.0]])
    assert explained_variance(r, r, np.ones((1, 3))) == 1.0
    assert explained_variance(np.zeros((1, 3)) + 2.0, r, np.ones((1, 3))) == pytest.approx(0.0)
