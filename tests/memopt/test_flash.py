"""Stage 12: four attention kernels agree (forward and backward); bytes moved as derived."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.models.gpt import GPT, GPTConfig
from spiral.nn import functional as F
from spiral.nn.attention_io import IOCounter, flash_io, naive_io, tiles_for_memory
from spiral.nn.attention_kernels import scaled_dot_product_attention as sdpa
from spiral.nn.flash import flash_forward

pytestmark = pytest.mark.stage12


def _run(kernel: str, arrays: list[np.ndarray], g: np.ndarray, **kw: object) -> list[np.ndarray]:
    q, k, v = (Tensor(a, requires_grad=True) for a in arrays)
    out = sdpa(q, k, v, kernel=kernel, **kw)  # type: ignore[arg-type]
    (out * Tensor(g)).sum().backward()
    return [out.data, q.grad, k.grad, v.grad]


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 23), S=st.integers(1, 23), E=st.integers(1, 9), Ev=st.integers(1, 9),
       bq=st.integers(1, 9), bk=st.integers(1, 9), causal=st.booleans(),
       kernel=st.sampled_from(["tiled", "online", "flash"]), seed=st.integers(0, 2**16))
def test_kernels_equal_naive_in_float64(L: int, S: int, E: int, Ev: int, bq: int, bk: int,
                                        causal: bool, kernel: str, seed: int) -> None:
    if causal:
        S = max(S, L)  # top-left causal: every query row keeps key 0 (no empty rows)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in ((2, L, E), (2, S, E), (2, S, Ev))]
    g = rng.standard_normal((2, L, Ev))
    ref = _run("naive", arrays, g, is_causal=causal)
    got = _run(kernel, arrays, g, is_causal=causal, block_q=bq, block_k=bk)
    for a, b in zip(ref, got):
        assert np.abs(a - b).max() <= 1e-12 * max(1.0, np.abs(a).max())


def test_float32_error_within_derived_bound() -> None:
    # each output is a convex combination of V's rows: rounding errors of a length-S sum of
    # products are bounded by ~S·u·max|v| with u = 2^-24 (the chapter's bound)
    rng = np.random.default_rng(0)
    L = S = 200
    arrays = [rng.standard_normal((2, n, 16)).astype(np.float32) for n in (L, S, S)]
    exact = _run("naive", [a.astype(np.float64) for a in arrays], np.ones((2, L, 16)))[0]
    got = _run("flash", arrays, np.ones((2, L, 16), dtype=np.float32), block_q=32,
               block_k=48)[0]
    bound = S * 2.0**-24 * np.abs(arrays[2]).max()
    err = np.abs(got - exact).max()
    assert 0 < err <= bound


def test_masks_and_gqa_broadcast() -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 2, 3, 7, 4))  # (B, Hkv, G, T, hd): grouped queries
    k, v = rng.standard_normal((2, 1, 2, 1, 7, 4))
    mask = rng.random((7, 7)) < 0.7
    mask[:, 0] = True  # keep every row non-empty
    g = rng.standard_normal((2, 2, 3, 7, 4))
    ref = _run("naive", [q, k, v], g, attn_mask=mask)
    got = _run("flash", [q, k, v], g, attn_mask=mask, block_q=3, block_k=2)
    for a, b in zip(ref, got):
        assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("attention", ["tiled", "online", "flash"])
def test_gpt_attention_switch_matches_naive(attention: str) -> None:
    def grads(**kw: object) -> list[np.ndarray]:
        c = GPTConfig.preset("baby", 17, n_layers=2, d_model=16, n_heads=2, context_length=12,
                             n_kv_heads=1, **kw)
        m = GPT(c, rng=np.random.default_rng(0))
        x = np.random.default_rng(1).integers(0, 17, (2, 12))
        F.cross_entropy(m(x), x).backward()
        return [p.grad for p in m.parameters()]

    for a, b in zip(grads(), grads(attention=attention)):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_online_recurrence_equals_two_pass_softmax() -> None:
    rng = np.random.default_rng(2)
    s = rng.standard_normal(37) * 4
    m, ell = -np.inf, 0.0
    for j in range(0, 37, 5):  # the recurrence, block by block, on one row of scores
        blk = s[j:j + 5]
        m_new = max(m, blk.max())
        ell = np.exp(m - m_new) * ell + np.exp(blk - m_new).sum()
        m = m_new
    two_pass = np.exp(s - s.max()).sum()  # pass 1: max; pass 2: sum
    assert m == s.max()
    assert ell == pytest.approx(two_pass, rel=1e-14)
    trace: list[dict[str, np.ndarray]] = []
    q, kk = np.eye(1, 1)[None], s[None, :, None]  # scores = q·k = s with E = 1
    v = rng.standard_normal((1, 37, 3))
    out, lse = flash_forward(q, kk, v, 1.0, block_q=1, block_k=5, trace=trace)
    assert len(trace) == 8 and trace[-1]["m"].item() == s.max()
    p = np.exp(s - s.max()) / two_pass
    assert np.allclose(out[0, 0], p @ v[0], rtol=0, atol=1e-14)
    assert lse.item() == pytest.approx(s.max() + np.log(two_pass), rel=1e-14)


@pytest.mark.parametrize("bq,bk", [(1, 1), (4, 7), (16, 16), (13, 64), (64, 5)])
@pytest.mark.parametrize("causal", [False, True])
def test_counted_bytes_equal_the_derivation(bq: int, bk: int, causal: bool) -> None:
    rng = np.random.default_rng(3)
    B, L, E = 3, 50, 8
    arrays = [rng.standard_normal((B, L, E)) for _ in range(3)]
    for kernel in ("naive", "flash"):
        c = IOCounter()
        _run(kernel, arrays, np.ones((B, L, E)), is_causal=causal, block_q=bq, block_k=bk,
             counter=c)
        if kernel == "naive":
            expect = naive_io(L, L, E, E) + naive_io(L, L, E, E, backward=True)
        else:
            expect = flash_io(L, L, E, E, bq, bk, causal) + flash_io(L, L, E, E, bq, bk, causal,
                                                                     backward=True)
        assert c.bytes_moved == 8 * B * expect


def test_blocks_for_memory_fit_and_errors() -> None:
    for M in (4096, 32_768, 100_000):
        b = tiles_for_memory(M, 16)
        c = IOCounter(sram_bytes=M)
        a = [np.ones((1, 100, 16), dtype=np.float32)] * 3
        _run("flash", a, np.ones((1, 100, 16), dtype=np.float32), block_q=b, block_k=b,
             counter=c)
        assert c.peak_on_chip <= M
    with pytest.raises(ValueError, match="on chip"):
        _run("flash", a, np.ones((1, 100, 16), dtype=np.float32), block_q=64, block_k=64,
             counter=IOCounter(sram_bytes=1000))
    with pytest.raises(ValueError, match="kernel must be one of"):
        _run("fast", a, a[0])
    with pytest.raises(ValueError, match="block sizes"):
        _run("flash", a, a[0], block_q=0)
