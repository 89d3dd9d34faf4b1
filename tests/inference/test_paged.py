"""Stage 17: the paged KV cache ≡ the contiguous cache, bit for bit; copy-on-write sharing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.inference import KVCache, forward_cached
from spiral.inference.paged import OutOfBlocks, PagedKVCache
from spiral.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.stage17


def tiny(positional: str = "rope", n_kv: int | None = 2, dtype: object = np.float32) -> GPT:
    cfg = GPTConfig(vocab_size=13, context_length=24, n_layers=2, n_heads=4, d_model=16,
                    positional=positional, n_kv_heads=n_kv, init_std=0.3)
    m = GPT(cfg, rng=np.random.default_rng(0), dtype=dtype)
    m.eval()
    return m


def run(m: GPT, cache: object, ids: np.ndarray, n_prompt: int) -> np.ndarray:
    steps = [forward_cached(m, ids[:, :n_prompt], cache)]
    steps += [forward_cached(m, ids[:, t:t + 1], cache) for t in range(n_prompt, ids.shape[1])]
    return np.concatenate(steps, axis=1)


@settings(deadline=None, max_examples=30)
@given(positional=st.sampled_from(["learned", "rope", "alibi"]),
       n_kv=st.sampled_from([None, 2, 1]), block_size=st.integers(1, 7),
       n_prompt=st.integers(1, 12), n_new=st.integers(0, 10), seed=st.integers(0, 999))
def test_paged_equals_contiguous_exactly(positional: str, n_kv: int | None, block_size: int,
                                         n_prompt: int, n_new: int, seed: int) -> None:
    m = tiny(positional, n_kv)
    ids = np.random.default_rng(seed).integers(0, 13, (1, n_prompt + n_new))
    contiguous = run(m, KVCache.for_model(m), ids, n_prompt)
    pool = PagedKVCache.for_model(m, num_blocks=40, block_size=block_size)
    paged = run(m, pool.sequence(7), ids, n_prompt)
    np.testing.assert_array_equal(paged, contiguous)
    n = n_prompt + n_new
    assert len(pool.tables[7]) == -(-n // block_size)  # blocks used = ceil(n / block_size)
    assert pool.num_free == 40 - len(pool.tables[7])
    pool.free_sequence(7)
    assert pool.num_free == 40 and not pool.refcount.any()


@pytest.mark.parametrize("block_size,n_prompt", [(4, 6), (4, 8), (1, 5), (16, 5)])
def test_prefix_sharing_copies_on_write(block_size: int, n_prompt: int) -> None:
    m = tiny()
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 13, (1, n_prompt))
    tails = [rng.integers(0, 13, (1, 5)) for _ in range(2)]
    pool = PagedKVCache.for_model(m, num_blocks=30, block_size=block_size)
    parent = pool.sequence(0)
    forward_cached(m, prompt, parent)
    prefix_blocks = list(pool.tables[0])
    before = [k[prefix_blocks].copy() for k in pool.keys]
    child = pool.fork(0, 1)
    assert all(pool.refcount[b] == 2 for b in prefix_blocks)  # the prefix is stored once
    for seq, tail in ((child, tails[1]), (parent, tails[0])):
        got = np.concatenate([forward_cached(m, tail[:, i:i + 1], seq)
                              for i in range(tail.shape[1])], axis=1)
        ref = run(m, KVCache.for_model(m), np.concatenate([prompt, tail], axis=1), n_prompt)
        np.testing.assert_array_equal(got, ref[:, n_prompt:])
    partial = n_prompt % block_size != 0
    # the full prefix blocks stay shared; a partly filled last one was copied by each writer
    shared = prefix_blocks[:-1] if partial else prefix_blocks
    assert pool.tables[0][:len(shared)] == pool.tables[1][:len(shared)] == shared
    if partial:
        assert pool.tables[0][len(shared)] != pool.tables[1][len(shared)]
    for k, old in zip(pool.keys, before):  # the shared slots were never overwritten
        np.testing.assert_array_equal(k[shared], old[:len(shared)])
    pool.free_sequence(1)
    pool.free_sequence(0)
    assert pool.num_free == 30 and not pool.refcount.any()


def test_out_of_blocks_is_all_or_nothing() -> None:
    pool = PagedKVCache(n_layers=1, n_kv_heads=1, head_dim=2, num_blocks=3, block_size=2)
    s = pool.sequence(0)
    s.reserve(4)
    s.advance(4)
    assert pool.blocks_needed(0, 3) == 2
    with pytest.raises(OutOfBlocks, match="needs 2 blocks, 1 are free"):
        s.reserve(3)
    assert pool.tables[0] == [0, 1] and pool.num_free == 1


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="positive"):
        PagedKVCache(1, 1, 1, num_blocks=0)
    pool = PagedKVCache(1, 1, 2, num_blocks=4, block_size=2)
    pool.sequence(0)
    with pytest.raises(ValueError, match="already exists"):
        pool.fork(0, 0)
    with pytest.raises(ValueError, match="no sequence 5 to fork"):
        pool.fork(5, 6)
    with pytest.raises(ValueError, match="no sequence 5 to free"):
        pool.free_sequence(5)
    with pytest.raises(ValueError, match="batch size 1"):
        pool.sequence(0).append(0, np.zeros((2, 1, 1, 2)), np.zeros((2, 1, 1, 2)))
