"""Stage 13: the α–β cost model — its formulas, and two published Megatron-LM measurements."""

from __future__ import annotations

import pytest

from spiral.distributed import cost

pytestmark = pytest.mark.stage13


def test_ring_all_reduce_time_is_alpha_beta_formula():
    # 2(g-1)(α + n/(gβ)); bandwidth term tends to 2n/β for large g
    assert cost.ring_all_reduce_s(8e9, 1, 1e9, 1e-5) == 0.0
    t = cost.ring_all_reduce_s(8e9, 4, 1e9, 0.0)
    assert t == pytest.approx(2 * 3 * 8e9 / (4 * 1e9))
    assert cost.ring_all_reduce_s(8e9, 4096, 1e9, 0.0) == pytest.approx(16.0, rel=1e-3)


def test_zero_memory_matches_16_bytes_per_parameter_derivation():
    m, c = cost.MODELS["llama-7b"], cost.CLUSTERS["dgx-a100"]
    psi = m.n_params
    for zero, expected in ((0, 16 * psi), (1, 4 * psi + 12 * psi / 8), (2, 2 * psi + 14 * psi / 8),
                           (3, 16 * psi / 8)):
        r = cost.step_cost(m, c, cost.Layout(dp=8, zero=zero, recompute=True), 64, 0.5)
        assert r["model_state_bytes"] == pytest.approx(expected)


def test_bubble_term_is_the_pipeline_formula():
    m, c = cost.MODELS["gpt2-124m"], cost.CLUSTERS["dgx-a100"]
    r = cost.step_cost(m, c, cost.Layout(pp=4), 8, 0.5)
    # compute · (p-1)/m of the step is idle: bubble/(compute + bubble) = (p-1)/(m+p-1)
    assert r["bubble_s"] / (r["compute_s"] + r["bubble_s"]) == pytest.approx(3 / 11)


def test_reproduces_megatron_lm_weak_scaling_within_stated_error():
    rows = cost.published_reproductions()
    assert len(rows) >= 2
    for row in rows:  # the stated error: within 15 % relative (the chapter discusses the gap)
        assert abs(row["relative_error"]) < 0.15, row


def test_scaling_limits_have_reasons():
    m, c = cost.MODELS["gpt2-124m"], cost.CLUSTERS["dgx-a100"]
    dp = cost.scaling_limit(m, c, "dp", 512, 0.5)
    pp = cost.scaling_limit(m, c, "pp", 512, 0.5)
    assert 1 < dp["limit"] < 4096 and pp["limit"] <= m.n_layers
    assert cost.scaling_limit(cost.MODELS["llama-7b"], c, "dp", 1024, 0.5)["limit"] == 0
    with pytest.raises(ValueError, match="kind"):
        cost.scaling_limit(m, c, "sp", 512, 0.5)
