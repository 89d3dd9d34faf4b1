"""The DPO derivation, checked on a tabular policy (stage 16)."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.align.tabular import (
    fit_dpo,
    implicit_reward,
    log_partition,
    optimal_policy,
    rlhf_objective,
)

pytestmark = pytest.mark.stage16


def _problem(seed: int, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(n) * 2), rng.normal(size=n)


@pytest.mark.parametrize("beta", [0.3, 1.0, 3.0])
def test_closed_form_maximises_the_kl_regularised_objective(beta: float) -> None:
    pi_ref, r = _problem(0)
    star = optimal_policy(pi_ref, r, beta)
    j_star = rlhf_objective(star, pi_ref, r, beta)
    assert j_star == pytest.approx(beta * log_partition(pi_ref, r, beta), rel=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(200):  # any other policy scores lower: J(π*) − J(π) = β KL(π ‖ π*)
        pi = rng.dirichlet(np.ones(len(r)))
        gap = j_star - rlhf_objective(pi, pi_ref, r, beta)
        assert gap == pytest.approx(beta * np.sum(pi * np.log(pi / star)), rel=1e-9, abs=1e-12)
        assert gap > 0


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_dpo_minimiser_is_the_optimum_and_recovers_the_reward(beta: float) -> None:
    pi_ref, r = _problem(2)
    pi, _ = fit_dpo(pi_ref, r, beta)
    np.testing.assert_allclose(pi, optimal_policy(pi_ref, r, beta), atol=1e-6)
    shift = implicit_reward(pi, pi_ref, beta) - r
    assert np.ptp(shift) < 1e-6  # r up to one constant ...
    assert shift.mean() == pytest.approx(-beta * log_partition(pi_ref, r, beta), abs=1e-6)


def test_the_optimum_does_not_depend_on_adding_a_constant_to_the_reward() -> None:
    pi_ref, r = _problem(3)
    np.testing.assert_allclose(optimal_policy(pi_ref, r + 5.0, 0.5),
                               optimal_policy(pi_ref, r, 0.5), atol=1e-14)
