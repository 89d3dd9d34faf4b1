"""spiral.scaling: FLOPs against a hand count and the kernels' own matmuls, L-BFGS against
scipy, the Chinchilla fitter on synthetic runs, and the compute-optimal planner."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.models.gpt import GPT, GPTConfig
from spiral.scaling import (
    CHINCHILLA,
    CHINCHILLA_COMPUTE,
    CHINCHILLA_REFIT,
    allocation_exponents,
    approx_training_flops,
    compute_optimal,
    fit_scaling_law,
    forward_flops,
    lbfgs,
    matmul_parameters,
    non_embedding_parameters,
    training_flops,
)
from spiral.scaling.fit import _loss

pytestmark = pytest.mark.stage14

GPT2_TINY = GPTConfig(vocab_size=7, context_length=5, n_layers=1, n_heads=2, d_model=8)
LLAMA_TINY = GPTConfig(vocab_size=11, context_length=8, n_layers=2, n_heads=4, d_model=16,
                       n_kv_heads=2, ffn_type="swiglu", ffn_hidden=24, norm_type="rmsnorm",
                       positional="rope_halves")


def test_forward_flops_equal_a_hand_count() -> None:
    """Every matmul of one sequence written out: 2·(rows)·(inner)·(columns) each."""
    # GPT-2 style: T = 5, C = 8, H = 2 heads of 4, FFN 32, V = 7, one layer
    qkv, scores, av, out = 2 * 5 * 8 * 24, 2 * 2 * 5 * 5 * 4, 2 * 2 * 5 * 5 * 4, 2 * 5 * 8 * 8
    ffn, head = 2 * 5 * 8 * 32 + 2 * 5 * 32 * 8, 2 * 5 * 8 * 7
    assert forward_flops(GPT2_TINY) == qkv + scores + av + out + ffn + head
    # Llama style: T = 8, C = 16, H = 4, Hkv = 2, hd = 4, SwiGLU 24, V = 11, two layers
    qkv = 2 * 8 * 16 * (4 * 4) + 2 * (2 * 8 * 16 * (2 * 4))  # Q, then K and V of 2 heads
    scores = av = 2 * 4 * 8 * 8 * 4
    out, ffn = 2 * 8 * 16 * 16, 3 * (2 * 8 * 16 * 24)
    head = 2 * 8 * 16 * 11
    assert forward_flops(LLAMA_TINY) == 2 * (qkv + scores + av + out + ffn) + head
    assert forward_flops(LLAMA_TINY, batch=3) == 3 * forward_flops(LLAMA_TINY)


@pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
def test_forward_flops_equal_the_matmuls_the_engine_runs(config: GPTConfig,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Count 2·m·k·n inside the linear and attention kernels during a real forward pass."""
    from spiral.nn import kernels as K

    seen = [0]
    linear, attention = K.linear_forward, K.attention_forward

    def count_linear(x, w, b=None):  # type: ignore[no-untyped-def]
        seen[0] += 2 * int(np.prod(x.shape[:-1])) * w.shape[1] * w.shape[0]
        return linear(x, w, b)

    def count_attention(q, k, v, *args, **kw):  # type: ignore[no-untyped-def]
        lead = int(np.prod(np.broadcast_shapes(q.shape[:-2], k.shape[:-2])))
        seen[0] += 2 * lead * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        return attention(q, k, v, *args, **kw)

    monkeypatch.setattr(K, "linear_forward", count_linear)
    monkeypatch.setattr(K, "attention_forward", count_attention)
    GPT(config, rng=np.random.default_rng(0))(np.zeros((2, config.context_length), np.int64))
    assert seen[0] == forward_flops(config, batch=2)


def test_training_flops_are_six_n_d_plus_the_attention_term() -> None:
    c = LLAMA_TINY
    tokens = 1e6
    exact = training_flops(c, tokens)
    approx = approx_training_flops(matmul_parameters(c), tokens, n_layers=c.n_layers,
                                   context=c.context_length, d_attn=c.d_model)
    assert exact == pytest.approx(approx, rel=1e-12)
    assert non_embedding_parameters(c) < matmul_parameters(c)  # the head is a matmul
    with pytest.raises(ValueError, match="positive"):
        approx_training_flops(0, 1)


def _synthetic(noise: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n = np.repeat(np.logspace(4, 7, 8), 3)
    d = np.tile(np.logspace(6, 8, 3), 8)
    truth = {"E": 1.5, "A": 60.0, "alpha": 0.35, "B": 300.0, "beta": 0.3}
    loss = truth["E"] + truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["beta"]
    return n, d, loss * np.exp(noise * rng.standard_normal(loss.shape)), truth  # type: ignore


def test_lbfgs_reaches_scipys_minimum_on_the_huber_loss() -> None:
    optimize = pytest.importorskip("scipy.optimize")
    n, d, loss, _ = _synthetic(0.01, 1)
    args = (np.log(n), np.log(d), np.log(loss), 1e-3)
    x0 = np.array([5.0, 5.0, 0.0, 0.5, 0.5])
    ours = lbfgs(lambda th: _loss(th, *args), x0)
    theirs = optimize.minimize(lambda th: _loss(th, *args), x0, jac=True, method="L-BFGS-B",
                               options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
    assert ours.fun <= theirs.fun + 1e-6 * max(1.0, abs(theirs.fun))


@pytest.mark.parametrize("two_terms", [False, True])
def test_fitter_recovers_exact_parameters_without_noise(two_terms: bool) -> None:
    n, d, loss, truth = _synthetic(0.0, 0)
    if not two_terms:  # one budget: L(N) = E + A/N^α
        n, loss = np.logspace(4, 7, 8), truth["E"] + truth["A"] / np.logspace(4, 7, 8) ** 0.35
        truth = {k: truth[k] for k in ("E", "A", "alpha")}
    fit = fit_scaling_law(n, loss, d if two_terms else None)
    for k, v in truth.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-5), k


def test_fitter_intervals_cover_the_true_parameters_under_noise() -> None:
    """1 % multiplicative noise on 24 runs: every true parameter inside its 95 % interval,
    and a held-out larger run inside the prediction interval."""
    n, d, loss, truth = _synthetic(0.01, 2)
    fit = fit_scaling_law(n, loss, d, n_bootstrap=40, n_starts=4, seed=0)
    for k, v in truth.items():
        lo, hi = fit.interval(k)
        assert lo <= v <= hi, (k, v, lo, hi)
    big_n, big_d = 3e7, 1e8
    lo, hi = fit.predict_interval(big_n, big_d)
    true_big = truth["E"] + truth["A"] / big_n ** 0.35 + truth["B"] / big_d ** 0.3
    assert lo <= true_big <= hi


def test_fitter_errors() -> None:
    with pytest.raises(ValueError, match="at least"):
        fit_scaling_law(np.array([1e3, 1e4]), np.array([3.0, 2.5]))
    with pytest.raises(ValueError, match="positive"):
        fit_scaling_law(np.array([1e3, 1e4, 1e5, -1]), np.array([3.0, 2.5, 2.2, 2.1]))


def test_planner_with_published_chinchilla_parameters() -> None:
    """Approach 3's published fit: a = β/(α+β) = 0.45, b = 0.55 (Hoffmann et al., Table 2:
    0.46 / 0.54) — and far more than 20 tokens per parameter at Chinchilla's compute."""
    a, b = allocation_exponents(CHINCHILLA)
    assert a == pytest.approx(0.46, abs=0.01) and b == pytest.approx(0.54, abs=0.01)
    plan = compute_optimal(CHINCHILLA_COMPUTE, CHINCHILLA)
    assert 6 * plan.n_params * plan.tokens == pytest.approx(CHINCHILLA_COMPUTE, rel=1e-12)
    assert plan.tokens_per_parameter > 80


def test_planner_with_the_refit_gives_twenty_tokens_per_parameter() -> None:
    """Besiroglu et al.'s (2024) refit: a ≈ b ≈ 0.5 and ≈ 20 tokens per parameter at 5.76e23."""
    a, b = allocation_exponents(CHINCHILLA_REFIT)
    assert a == pytest.approx(0.5, abs=0.02) and b == pytest.approx(0.5, abs=0.02)
    plan = compute_optimal(CHINCHILLA_COMPUTE, CHINCHILLA_REFIT)
    assert 15 <= plan.tokens_per_parameter <= 25


@pytest.mark.parametrize("law", [CHINCHILLA, CHINCHILLA_REFIT])
def test_planner_is_the_minimum_along_the_iso_flop_curve(law: dict[str, float]) -> None:
    c = 1e20
    plan = compute_optimal(c, law)
    n = plan.n_params * np.exp(np.linspace(-1, 1, 201))
    curve = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / (c / (6 * n)) ** law["beta"]
    assert np.argmin(curve) == 100 and curve[100] == pytest.approx(plan.loss, rel=1e-12)
    with pytest.raises(ValueError, match="missing"):
        compute_optimal(c, {"E": 1.0, "A": 1.0, "alpha": 0.3})
