"""The claims chapter 7 derives, each checked numerically (one test per claim)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.nn import SelfAttention
from spiral.nn import functional as F
from spiral.nn import kernels as K

pytestmark = pytest.mark.stage7


@pytest.mark.parametrize("d", [4, 64, 512])
def test_dot_product_variance_is_d_and_scaling_restores_one(d: int) -> None:
    """Var(q·k) = d · Var(q_i) · Var(k_i) = d for unit variance; Var(q·k / √d) = 1."""
    rng = np.random.default_rng(d)
    n = min(100_000, 10_000_000 // d)
    q, k = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    dots = np.einsum("nd,nd->n", q, k)
    # the sample variance's relative sd is √((κ − 1)/n), κ = 3 + 6/d: about 0.6-1 % here
    assert abs(dots.var() / d - 1.0) < 0.03
    assert abs((dots / np.sqrt(d)).var() - 1.0) < 0.03


def test_dot_product_variance_general_form() -> None:
    """Var(q·k) = d σ_q² σ_k² for independent zero-mean components."""
    rng = np.random.default_rng(0)
    d, n, sq, sk = 32, 100_000, 0.5, 3.0
    dots = np.einsum("nd,nd->n", sq * rng.standard_normal((n, d)), sk * rng.standard_normal((n, d)))
    assert abs(dots.var() / (d * sq**2 * sk**2) - 1.0) < 0.03


def test_unscaled_logits_saturate_the_softmax() -> None:
    """Without 1/√d the softmax entropy collapses and its gradient shrinks as d grows."""
    rng = np.random.default_rng(1)
    T = 32

    def stats(d: int, scaled: bool) -> tuple[float, float]:
        q, k = rng.standard_normal((256, T, d)), rng.standard_normal((256, T, d))
        s = q @ k.transpose(0, 2, 1) / (np.sqrt(d) if scaled else 1.0)
        p = K.softmax_forward(s, -1)
        ent = float(-(p * np.log(np.maximum(p, 1e-300))).sum(-1).mean())
        g = rng.standard_normal(p.shape)
        grad = K.softmax_backward(g, p, -1)  # ∂L/∂s for a random upstream gradient
        return ent, float(np.sqrt((grad**2).sum(-1)).mean())

    ent_s, grad_s = stats(512, True)
    ent_u, grad_u = stats(512, False)
    assert ent_u < 0.25 * ent_s  # nearly one-hot rows
    assert grad_u < 0.5 * grad_s  # and a shrinking Jacobian
    # with the scale, the statistics barely depend on d
    ent_s4, _ = stats(4, True)
    assert abs(ent_s - ent_s4) / ent_s4 < 0.2


def test_minus_infinity_mask_equals_softmax_over_the_prefix() -> None:
    """softmax(s + M)_t = softmax(s_{≤t}) padded with exact zeros: −∞ renormalises over the past."""
    rng = np.random.default_rng(2)
    T = 7
    s = rng.standard_normal((T, T)) * 5
    p = K.softmax_forward(s + K.causal_mask(T, T, np.float64), -1)
    for t in range(T):
        e = np.exp(s[t, : t + 1] - s[t, : t + 1].max())
        np.testing.assert_allclose(p[t, : t + 1], e / e.sum(), rtol=1e-14)
        assert np.all(p[t, t + 1:] == 0.0)


def test_large_finite_mask_leaks_when_logits_are_large() -> None:
    """A finite "−1e4" mask is not −∞: logits of that size let the future through."""
    s = np.array([[0.0, 2e4]])  # an unscaled logit of 20,000 on a future key
    leaky = K.softmax_forward(s + np.array([[0.0, -1e4]]), -1)
    exact = K.softmax_forward(s + K.causal_mask(1, 2, np.float64), -1)
    assert leaky[0, 1] > 0.99 and exact[0, 1] == 0.0


@settings(deadline=None, max_examples=20)
@given(T=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_unmasked_self_attention_is_permutation_equivariant(T: int, seed: int) -> None:
    """attn(P x) = P attn(x): (PQ)(PK)ᵀ = P(QKᵀ)Pᵀ, row-wise softmax commutes with both
    permutations, and (P A Pᵀ)(P V) = P (A V). Order is invisible without positions."""
    rng = np.random.default_rng(seed)
    attn = SelfAttention(6, 4, causal=False, rng=rng, dtype=np.float64)
    x = rng.standard_normal((1, T, 6))
    perm = rng.permutation(T)
    y = attn(Tensor(x)).data
    np.testing.assert_allclose(attn(Tensor(x[:, perm])).data, y[:, perm], rtol=1e-10, atol=1e-12)


def test_causal_attention_is_not_permutation_equivariant() -> None:
    rng = np.random.default_rng(3)
    attn = SelfAttention(6, 4, causal=True, rng=rng, dtype=np.float64)
    x = rng.standard_normal((1, 5, 6))
    perm = np.array([4, 3, 2, 1, 0])
    assert not np.allclose(attn(Tensor(x[:, perm])).data, attn(Tensor(x)).data[:, perm])


def test_attention_is_a_soft_dictionary_lookup() -> None:
    """With one key far more similar to the query than the rest, attention returns its value
    (hard lookup); with equal similarities, the mean of the values."""
    rng = np.random.default_rng(4)
    keys = np.eye(5)  # five orthogonal keys
    values = rng.standard_normal((5, 3))
    q_sharp = Tensor(50.0 * keys[2][None, None])  # (1, 1, 5), aligned with key 2
    out = F.scaled_dot_product_attention(q_sharp, Tensor(keys[None]), Tensor(values[None]),
                                         scale=1.0)
    np.testing.assert_allclose(out.data[0, 0], values[2], atol=1e-12)
    q_flat = Tensor(np.zeros((1, 1, 5)))
    out = F.scaled_dot_product_attention(q_flat, Tensor(keys[None]), Tensor(values[None]))
    np.testing.assert_allclose(out.data[0, 0], values.mean(0), atol=1e-12)


def test_attention_memory_grows_as_n_squared() -> None:
    """The saved probabilities P of one head are n × n: doubling n quadruples them."""
    from spiral.profiling.attention import attention_peak_bytes

    small, big = attention_peak_bytes(256, 16), attention_peak_bytes(512, 16)
    assert 3.5 < big / small < 4.1  # the n·d terms are negligible next to n² at d = 16


def test_score_matrix_costs_n_squared_d_multiply_adds() -> None:
    from spiral.profiling.attention import attention_flops

    assert attention_flops(128, 64) == 4 * 128 * 128 * 64  # QKᵀ and AV: 2 n² d each
    assert attention_flops(256, 64) == 4 * attention_flops(128, 64)


def test_scores_depend_on_wq_wk_only_through_their_product() -> None:
    """(W_Q, W_K) -> (A W_Q, A^{-T} W_K) and (W_V, W_O) -> (B W_V, W_O B^{-1}) leave the head's
    output unchanged: 2·head_dim² of the 4·d_model·head_dim parameters are redundant."""
    rng = np.random.default_rng(5)
    attn = SelfAttention(6, 4, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((2, 5, 6)))
    y = attn(x).data
    A = rng.standard_normal((4, 4)) + 3 * np.eye(4)
    B = rng.standard_normal((4, 4)) + 3 * np.eye(4)
    attn.q_proj.weight.data = A @ attn.q_proj.weight.data
    attn.k_proj.weight.data = np.linalg.inv(A).T @ attn.k_proj.weight.data
    attn.v_proj.weight.data = B @ attn.v_proj.weight.data
    attn.out_proj.weight.data = attn.out_proj.weight.data @ np.linalg.inv(B)
    np.testing.assert_allclose(attn(x).data, y, rtol=1e-9, atol=1e-12)
    # whereas a shared projection (W_Q = W_K) forces symmetric scores
    attn.k_proj.weight.data = attn.q_proj.weight.data.copy()
    q = attn.q_proj(x).data
    s = q @ np.swapaxes(q, -1, -2)
    np.testing.assert_allclose(s, np.swapaxes(s, -1, -2), atol=1e-12)
