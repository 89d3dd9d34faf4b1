"""Stage 9's claims, checked numerically: permutation equivariance without positions, the
sinusoidal shift-as-rotation identity, RoPE's relative-offset property and its complex form,
the two RoPE layouts as a permutation of each other, and ALiBi's slope sequence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.nn.positional import (
    alibi_slopes,
    apply_rope,
    halves_permutation,
    rope_complex,
    sinusoidal_shift_matrix,
    sinusoidal_table,
)
from spiral.nn.transformer import Block

pytestmark = pytest.mark.stage9


def _block(causal: bool, positional: str = "none") -> Block:
    blk = Block(8, 2, rng=np.random.default_rng(0), dtype=np.float64, positional=positional)
    blk.attn.causal = causal
    return blk


@settings(deadline=None, max_examples=15)
@given(seed=st.integers(0, 10_000))
def test_attention_without_positions_is_permutation_equivariant(seed: int) -> None:
    """Block(P x) = P Block(x) for every permutation P of the positions (no mask, no PE)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 7, 8))
    perm = rng.permutation(7)
    blk = _block(causal=False)
    np.testing.assert_allclose(blk(Tensor(x[:, perm])).data, blk(Tensor(x)).data[:, perm],
                               atol=1e-12)


@pytest.mark.parametrize("how", ["sinusoidal", "rope", "causal mask"])
def test_positional_information_breaks_equivariance(how: str) -> None:
    """Adding sinusoids, rotating q/k, or a causal mask each make the order matter."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 7, 8))
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    blk = _block(causal=how == "causal mask", positional="rope" if how == "rope" else "none")
    pe = sinusoidal_table(7, 8) if how == "sinusoidal" else np.zeros((7, 8))
    gap = np.abs(blk(Tensor(x[:, perm] + pe)).data - blk(Tensor(x + pe)).data[:, perm]).max()
    assert gap > 1e-3


@settings(deadline=None, max_examples=25)
@given(pos=st.integers(0, 5000), k=st.integers(-200, 200), d=st.sampled_from([2, 8, 64]))
def test_sinusoidal_shift_is_a_fixed_rotation(pos: int, k: int, d: int) -> None:
    """PE(pos + k) = M_k PE(pos) with M_k orthogonal and independent of pos."""
    if pos + k < 0:
        k = -pos
    m = sinusoidal_shift_matrix(k, d)
    table = sinusoidal_table(pos + max(k, 0) + 1, d)
    np.testing.assert_allclose(m @ table[pos], table[pos + k], atol=1e-9)
    np.testing.assert_allclose(m @ m.T, np.eye(d), atol=1e-12)


def test_sinusoidal_dot_product_depends_on_offset_only() -> None:
    pe = sinusoidal_table(300, 32)
    for k in (1, 5, 40):
        dots = np.einsum("pd,pd->p", pe[:-k], pe[k:])  # PE(p)·PE(p + k) for every p
        np.testing.assert_allclose(dots, dots[0], atol=1e-9)


@settings(deadline=None, max_examples=25)
@given(m=st.integers(0, 4000), n=st.integers(0, 4000), shift=st.integers(0, 4000),
       seed=st.integers(0, 1000), convention=st.sampled_from(["interleaved", "halves"]))
def test_rope_score_depends_only_on_offset(m: int, n: int, shift: int, seed: int,
                                           convention: str) -> None:
    """⟨R(m) q, R(n) k⟩ = ⟨R(m + s) q, R(n + s) k⟩ for every shift s."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, 16)), rng.standard_normal((1, 16))

    def score(a: int, b: int) -> float:
        qa = apply_rope(Tensor(q), np.array([a]), convention=convention).data
        kb = apply_rope(Tensor(k), np.array([b]), convention=convention).data
        return float((qa @ kb.T).item())

    assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-9)


def test_rope_is_complex_multiplication() -> None:
    """Interleaved RoPE equals z_i · e^{i m θ_i} with z_i = x_{2i} + i x_{2i+1}."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 11, 12))
    pos = rng.integers(0, 10_000, 11)
    np.testing.assert_allclose(apply_rope(Tensor(x), pos).data, rope_complex(x, pos),
                               atol=1e-9)


def test_rope_conventions_agree_up_to_a_permutation() -> None:
    """halves(x[perm]) = interleaved(x)[perm], so q·k scores are identical."""
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal((9, 8)), rng.standard_normal((9, 8))
    perm = halves_permutation(8)
    inter = apply_rope(Tensor(q), convention="interleaved").data
    halves = apply_rope(Tensor(q[:, perm]), convention="halves").data
    np.testing.assert_allclose(halves, inter[:, perm], atol=1e-12)
    s_inter = inter @ apply_rope(Tensor(k), convention="interleaved").data.T
    s_halves = halves @ apply_rope(Tensor(k[:, perm]), convention="halves").data.T
    np.testing.assert_allclose(s_halves, s_inter, atol=1e-12)


def test_mixing_rope_conventions_loses_the_relative_property() -> None:
    """q rotated one way, k the other: the score now depends on absolute position."""
    rng = np.random.default_rng(4)
    q, k = rng.standard_normal((1, 8)), rng.standard_normal((1, 8))

    def mixed(a: int, b: int) -> float:
        qa = apply_rope(Tensor(q), np.array([a]), convention="interleaved").data
        kb = apply_rope(Tensor(k), np.array([b]), convention="halves").data
        return float((qa @ kb.T).item())

    assert abs(mixed(10, 7) - mixed(3, 0)) > 1e-3


def _paper_slopes(n: int) -> list[float]:
    """The paper's rule, written as start · ratio^i with start = ratio = 2^(-8/n)."""
    if math.log2(n).is_integer():
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]
    p = 2 ** math.floor(math.log2(n))
    return _paper_slopes(p) + _paper_slopes(2 * p)[0::2][: n - p]


@pytest.mark.parametrize("n_heads", [1, 2, 3, 4, 6, 8, 12, 16, 20, 32])
def test_alibi_slopes_follow_the_paper(n_heads: int) -> None:
    np.testing.assert_allclose(alibi_slopes(n_heads), _paper_slopes(n_heads), rtol=1e-12)


def test_alibi_slopes_for_8_and_16_heads() -> None:
    """8 heads: 1/2, 1/4, ..., 1/256; 16 heads interleave the geometric means: 2^-0.5, ..."""
    np.testing.assert_allclose(alibi_slopes(8), 0.5 ** np.arange(1, 9))
    np.testing.assert_allclose(alibi_slopes(16), 0.5 ** (np.arange(1, 17) / 2))
    s = alibi_slopes(6)
    np.testing.assert_allclose(s, [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])
