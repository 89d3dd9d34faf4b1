"""Stage 17: cached logits ≡ uncached logits for every attention/position variant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import no_grad
from spiral.generate import generate
from spiral.inference import KVCache, forward_cached, generate_cached
from spiral.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.stage17

POSITIONAL = ["learned", "rope", "rope_halves", "alibi", "sinusoidal", "none"]
F32_TOL = 2e-5  # float32 logits of O(1): cached and uncached sum in different orders


def tiny(positional: str = "learned", n_kv: int | None = None, dtype: object = np.float64,
         seed: int = 0, **kw: object) -> GPT:
    # init_std 0.3 gives O(1) logits and peaked attention, so a wrong position shows
    cfg = GPTConfig(vocab_size=13, context_length=16, n_layers=2, n_heads=4, d_model=16,
                    positional=positional, n_kv_heads=n_kv, init_std=0.3, **kw)  # type: ignore[arg-type]
    m = GPT(cfg, rng=np.random.default_rng(seed), dtype=dtype)
    m.eval()
    return m


def full_logits(m: GPT, ids: np.ndarray) -> np.ndarray:
    with no_grad():
        return np.asarray(m(ids).data)


def cached_logits(m: GPT, ids: np.ndarray, n_prompt: int) -> np.ndarray:
    """Prefill ids[:, :n_prompt], then decode the rest one token at a time."""
    cache = KVCache.for_model(m, batch_size=ids.shape[0])
    steps = [forward_cached(m, ids[:, :n_prompt], cache)]
    for t in range(n_prompt, ids.shape[1]):
        steps.append(forward_cached(m, ids[:, t:t + 1], cache))
    assert len(cache) == ids.shape[1]
    return np.concatenate(steps, axis=1)


@settings(deadline=None, max_examples=40)
@given(positional=st.sampled_from(POSITIONAL), n_kv=st.sampled_from([None, 2, 1]),
       n_prompt=st.integers(1, 10), n_new=st.integers(0, 6), batch=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_cached_equals_uncached_float64(positional: str, n_kv: int | None, n_prompt: int,
                                        n_new: int, batch: int, seed: int) -> None:
    m = tiny(positional, n_kv, seed=seed % 7)
    ids = np.random.default_rng(seed).integers(0, 13, (batch, n_prompt + n_new))
    np.testing.assert_allclose(cached_logits(m, ids, n_prompt), full_logits(m, ids),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("n_kv", [None, 2, 1])
def test_cached_equals_uncached_float32(positional: str, n_kv: int | None) -> None:
    m = tiny(positional, n_kv, dtype=np.float32)
    ids = np.random.default_rng(1).integers(0, 13, (1, 16))
    full = full_logits(m, ids)
    assert full.dtype == np.float32 and np.abs(full).max() > 0.5  # logits are not tiny
    np.testing.assert_allclose(cached_logits(m, ids, 4), full, rtol=0, atol=F32_TOL)


@pytest.mark.parametrize("kw", [
    dict(norm_type="rmsnorm", ffn_type="swiglu", positional="rope_halves", n_kv=2),
    dict(placement="post", bias=True), dict(tie_weights=False, bias=True, positional="alibi"),
    dict(rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
         positional="rope"),
])
def test_cached_equals_uncached_other_switches(kw: dict) -> None:
    kw = dict(kw)
    m = tiny(kw.pop("positional", "learned"), kw.pop("n_kv", None), **kw)
    ids = np.random.default_rng(2).integers(0, 13, (2, 14))
    np.testing.assert_allclose(cached_logits(m, ids, 3), full_logits(m, ids), atol=1e-10,
                               rtol=0)


@pytest.mark.parametrize("positional", ["learned", "rope", "alibi", "sinusoidal"])
def test_a_decode_step_at_the_wrong_position_is_caught(positional: str) -> None:
    """The comparison above can fail: decoding token t as if it sat at position 0."""
    m = tiny(positional)
    ids = np.random.default_rng(3).integers(0, 13, (1, 8))
    cache = KVCache.for_model(m)
    forward_cached(m, ids[:, :7], cache)
    cache.length = 0  # forget where we are: same keys in the buffer, wrong offset
    wrong = forward_cached(m, ids[:, 7:8], cache)[0, 0]
    assert np.abs(wrong - full_logits(m, ids)[0, 7]).max() > 1e-3


@pytest.mark.parametrize("n_kv", [None, 2, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bytes_per_token(n_kv: int | None, dtype: type) -> None:
    m = tiny("rope", n_kv, dtype=dtype)
    c, cache = m.config, KVCache.for_model(m, batch_size=3)
    item = np.dtype(dtype).itemsize
    formula = 2 * c.n_layers * c.kv_heads * c.head_dim * item
    assert cache.bytes_per_token == formula == c.kv_cache_bytes_per_token(item)
    assert cache.nbytes == formula * 3 * c.context_length
    assert cache.keys[0].dtype == dtype


@pytest.mark.parametrize("positional", POSITIONAL)
@pytest.mark.parametrize("n_kv", [None, 1])
def test_greedy_cached_generation_equals_uncached(positional: str, n_kv: int | None) -> None:
    m = tiny(positional, n_kv, dtype=np.float32)
    prompt = [1, 5, 2]
    # 20 new tokens run past context_length 16: the sliding window is covered too
    a = generate(m, prompt, 20, np.random.default_rng(0), temperature=0, use_cache=False)
    b = generate_cached(m, prompt, 20, np.random.default_rng(0), temperature=0)
    assert a == b and len(set(a)) > 1


def test_sampled_cached_generation_equals_uncached_with_the_same_rng() -> None:
    m = tiny("rope_halves", 2)
    kw = dict(temperature=0.9, top_k=8, top_p=0.95)
    a = generate(m, [3], 24, np.random.default_rng(5), use_cache=False, **kw)  # type: ignore[arg-type]
    b = generate_cached(m, [3], 24, np.random.default_rng(5), **kw)  # type: ignore[arg-type]
    assert a == b


def test_stop_token_and_training_mode_are_respected() -> None:
    m = tiny()
    out = generate_cached(m, [0], 30, np.random.default_rng(0), temperature=0)
    stop = out[2]
    short = generate_cached(m, [0], 30, np.random.default_rng(0), temperature=0,
                            stop_token=stop)
    assert short == out[:out.index(stop) + 1]
    m.train()
    generate_cached(m, [0], 2, np.random.default_rng(0))
    assert m.training


def test_bad_input_errors() -> None:
    m = tiny()
    with pytest.raises(ValueError, match="at least one token"):
        generate_cached(m, [], 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="temperature"):
        generate_cached(m, [1], 3, np.random.default_rng(0), temperature=-1)
    cache = KVCache.for_model(m)
    with pytest.raises(ValueError, match="context_length"):
        forward_cached(m, np.zeros((1, 17), dtype=np.int64), cache)
    with pytest.raises(ValueError, match="batch=1"):
        forward_cached(m, np.zeros((2, 3), dtype=np.int64), cache)
    with pytest.raises(ValueError, match="do not fit"):
        KVCache(1, 1, 1, 2, capacity=2).append(0, np.zeros((1, 1, 3, 2)), np.zeros((1, 1, 3, 2)))
    with pytest.raises(ValueError, match="positive"):
        KVCache(0, 1, 1, 2, capacity=2)
    with pytest.raises(ValueError, match="cannot truncate"):
        cache.truncate(5)


def test_truncate_then_decode_matches_uncached() -> None:
    """Rolling back (a rejected speculative draft) and writing other tokens is exact."""
    m = tiny("rope", 2)
    ids = np.random.default_rng(4).integers(0, 13, (1, 10))
    cache = KVCache.for_model(m)
    forward_cached(m, ids[:, :6], cache)
    forward_cached(m, (ids[:, 6:9] + 1) % 13, cache)  # three tokens that get rejected
    cache.truncate(6)
    got = forward_cached(m, ids[:, 6:10], cache)
    np.testing.assert_allclose(got, full_logits(m, ids)[:, 6:], rtol=0, atol=1e-10)
