"""GAE, GRPO's group advantages and the KL estimators (stage 16)."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.align.estimators import gae, group_advantages, kl_k1, kl_k2, kl_k3

pytestmark = pytest.mark.stage16


def test_gae_matches_a_hand_computed_example() -> None:
    # one row: a prompt target (mask 0), three completion tokens, one pad
    rewards = np.array([[9.0, 0.0, -0.1, 1.0, 7.0]])
    values = np.array([[5.0, 0.5, 0.4, 0.8, 3.0]])
    mask = np.array([[0.0, 1.0, 1.0, 1.0, 0.0]])
    g, lam = 0.9, 0.5
    # by hand, backwards from the last completion token (the state after it is terminal)
    d3 = 1.0 + g * 0.0 - 0.8
    d2 = -0.1 + g * 0.8 - 0.4
    d1 = 0.0 + g * 0.4 - 0.5
    a3 = d3
    a2 = d2 + g * lam * a3
    a1 = d1 + g * lam * a2
    adv, ret = gae(rewards, values, mask, gamma=g, lam=lam)
    np.testing.assert_allclose(adv, [[0.0, a1, a2, a3, 0.0]], atol=1e-12)
    np.testing.assert_allclose(ret, [[0.0, a1 + 0.5, a2 + 0.4, a3 + 0.8, 0.0]], atol=1e-12)


def test_gae_with_lambda_one_is_the_return_minus_the_value() -> None:
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    mask = np.ones((3, 6))
    adv, ret = gae(r, v, mask, gamma=1.0, lam=1.0)
    mc = np.cumsum(r[:, ::-1], axis=1)[:, ::-1]  # reward-to-go
    np.testing.assert_allclose(ret, mc, atol=1e-12)
    np.testing.assert_allclose(adv, mc - v, atol=1e-12)


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        gae(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3)))


def test_group_advantages_sum_to_zero_within_each_group() -> None:
    rng = np.random.default_rng(1)
    r = rng.random(24)
    a = group_advantages(r, 6).reshape(4, 6)
    np.testing.assert_allclose(a.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(a.std(axis=1), 1.0, atol=1e-4)
    # the order within a group follows the rewards
    assert np.all(np.argsort(a, axis=1) == np.argsort(r.reshape(4, 6), axis=1))
    assert np.all(group_advantages(np.ones(4), 2) == 0.0)  # equal rewards: nothing to learn
    with pytest.raises(ValueError, match="groups"):
        group_advantages(r, 5)


def test_k1_and_k3_are_unbiased_and_k3_is_never_negative() -> None:
    p = np.array([0.5, 0.3, 0.15, 0.05])
    q = np.array([0.1, 0.2, 0.3, 0.4])
    kl = float(np.sum(p * np.log(p / q)))
    lp, lq = np.log(p), np.log(q)
    # exact expectations under y ~ p
    assert float(p @ kl_k1(lp, lq)) == pytest.approx(kl, rel=1e-12)
    assert float(p @ kl_k3(lp, lq)) == pytest.approx(kl, rel=1e-12)
    assert float(p @ kl_k2(lp, lq)) != pytest.approx(kl, rel=1e-3)  # k2 is biased here
    assert np.all(kl_k3(lp, lq) >= 0) and np.any(kl_k1(lp, lq) < 0)
    # and by sampling: within four standard errors
    rng = np.random.default_rng(0)
    y = rng.choice(4, size=200_000, p=p)
    for est in (kl_k1(lp, lq)[y], kl_k3(lp, lq)[y]):
        assert abs(est.mean() - kl) < 4 * est.std() / np.sqrt(y.size)
    # k3 has the smaller variance when π and π_ref are close
    q2 = p * np.exp(0.1 * np.array([1.0, -1.0, 0.5, 0.0]))
    q2 /= q2.sum()
    var1 = p @ (kl_k1(lp, np.log(q2)) ** 2) - (p @ kl_k1(lp, np.log(q2))) ** 2
    var3 = p @ (kl_k3(lp, np.log(q2)) ** 2) - (p @ kl_k3(lp, np.log(q2))) ** 2
    assert var3 < var1
