"""Stage 17: batched decoding ≡ one sequence at a time; the scheduler's budget and progress."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.generate import generate
from spiral.inference import (
    Engine,
    KVCache,
    PagedKVCache,
    Request,
    forward_batch,
    forward_cached,
    generate_cached,
    poisson_trace,
    replay,
)
from spiral.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.stage17


def tiny(positional: str = "rope", n_kv: int | None = 2, context: int = 40) -> GPT:
    cfg = GPTConfig(vocab_size=13, context_length=context, n_layers=2, n_heads=4, d_model=16,
                    positional=positional, n_kv_heads=n_kv, init_std=0.3)
    m = GPT(cfg, rng=np.random.default_rng(0), dtype=np.float64)
    m.eval()
    return m


@settings(deadline=None, max_examples=25)
@given(positional=st.sampled_from(["learned", "rope", "alibi", "sinusoidal"]),
       n_kv=st.sampled_from([None, 2, 1]), paged=st.booleans(),
       lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_a_batched_decode_step_equals_each_sequence_alone(positional: str, n_kv: int | None,
                                                          paged: bool, lengths: list[int],
                                                          seed: int) -> None:
    m = tiny(positional, n_kv)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, 13, n) for n in lengths]
    nxt = rng.integers(0, 13, (len(lengths), 1))
    pool = PagedKVCache.for_model(m, num_blocks=64, block_size=3)

    def cache(i: int) -> object:
        return pool.sequence(i) if paged else KVCache.for_model(m)

    alone, batch = [cache(2 * i) for i in range(len(lengths))], \
        [cache(2 * i + 1) for i in range(len(lengths))]
    want = []
    for p, x, c, cb in zip(prompts, nxt, alone, batch):
        forward_cached(m, p[None, :], c)
        forward_cached(m, p[None, :], cb)
        want.append(forward_cached(m, x[None, :], c)[0, -1])
    got = forward_batch(m, nxt, batch)[:, -1]
    np.testing.assert_allclose(got, np.stack(want), rtol=0, atol=1e-10)
    assert [c.length for c in batch] == [n + 1 for n in lengths]


def test_generate_uses_the_cache_by_default_with_identical_tokens(monkeypatch) -> None:
    m = tiny("rope_halves")
    calls = []
    import spiral.inference.generate as g

    real = g.generate_cached
    monkeypatch.setattr(g, "generate_cached", lambda *a, **k: calls.append(1) or real(*a, **k))
    for kw in (dict(temperature=0.0), dict(temperature=0.8, top_k=5)):
        a = generate(m, [1, 2], 50, np.random.default_rng(3), **kw)  # past the context too
        b = generate(m, [1, 2], 50, np.random.default_rng(3), use_cache=False, **kw)
        assert a == b
    assert len(calls) == 2


def trace(n: int, seed: int, temperature: float = 0.0, rate: float = 4.0) -> list[Request]:
    return poisson_trace(n, rate, np.random.default_rng(seed), vocab_size=13,
                         prompt_len=(1, 14), new_tokens=(1, 20), temperature=temperature)


@settings(deadline=None, max_examples=12)
@given(seed=st.integers(0, 10_000), num_blocks=st.integers(9, 24),
       block_size=st.sampled_from([2, 4, 8]), max_batch=st.integers(1, 6),
       policy=st.sampled_from(["continuous", "static"]))
def test_the_scheduler_keeps_the_budget_and_finishes_every_request(
        seed: int, num_blocks: int, block_size: int, max_batch: int, policy: str) -> None:
    m = tiny()
    reqs = trace(12, seed)
    reqs = [r for r in reqs if -(-(len(r.prompt) + r.max_new_tokens) // block_size)
            <= num_blocks]
    engine = Engine(m, num_blocks, block_size, max_batch, policy)
    res = replay(engine, reqs, step_time=lambda info: 0.01 + 0.001 * info.decoded)
    assert all(blocks <= num_blocks for _, _, blocks in res.timeline)
    assert max(b for _, b, _ in res.timeline) <= max_batch
    assert engine.pool.num_free == num_blocks and not engine.pool.tables  # nothing leaked
    for r in reqs:  # every request done, token for token what it would decode alone
        assert r.finish_reason == "length"
        assert r.output == generate_cached(m, r.prompt, r.max_new_tokens,
                                           np.random.default_rng(0), temperature=0)


def test_preemption_happens_and_recomputation_changes_nothing() -> None:
    m = tiny()
    reqs = trace(16, 1, temperature=0.9)
    engine = Engine(m, num_blocks=10, block_size=4, max_batch=8)
    res = replay(engine, reqs, step_time=lambda info: 0.2)  # arrivals pile up
    assert res.preemptions > 0 and sum(r.preemptions for r in reqs) == res.preemptions
    for r in reqs:  # each request samples from its own generator: batch mates don't matter
        assert r.output == generate_cached(m, r.prompt, r.max_new_tokens,
                                           np.random.default_rng(r.seed), temperature=0.9)


def test_static_batching_admits_only_into_an_empty_engine() -> None:
    m = tiny()
    engine = Engine(m, num_blocks=40, block_size=4, max_batch=3, policy="static")
    for r in trace(9, 2):
        engine.add(r)
    while engine.has_work:
        was_running = bool(engine.running)
        info = engine.step()
        assert not (was_running and info.prefill_tokens)


def test_continuous_beats_static_throughput_when_steps_cost_little_per_row() -> None:
    """Under load (arrivals faster than service) a step's fixed cost is shared by more rows."""
    m = tiny()
    cost = lambda info: 0.02 + 0.001 * info.decoded + 0.0005 * info.prefill_tokens  # noqa: E731
    out = {}
    for policy in ("static", "continuous"):
        out[policy] = replay(Engine(m, 200, 4, 6, policy), trace(30, 5, rate=200.0),
                             step_time=cost)
    assert out["continuous"].throughput > 1.1 * out["static"].throughput
    assert out["continuous"].percentile(99) < out["static"].percentile(99)


def test_bad_requests_are_refused_with_a_reason() -> None:
    m = tiny(context=20)
    engine = Engine(m, num_blocks=3, block_size=4)
    with pytest.raises(ValueError, match="context length"):
        engine.add(Request([1] * 15, 10))
    with pytest.raises(ValueError, match="blocks"):
        engine.add(Request([1] * 10, 5))
    with pytest.raises(ValueError, match="temperature"):
        Request([1], 3, temperature=-1.0)
    with pytest.raises(ValueError, match="prompt"):
        Request([], 3)
    with pytest.raises(ValueError, match="policy"):
        Engine(m, 3, policy="fifo")


@pytest.mark.parametrize("block_size", [1, 3, 4])
def test_a_shared_prompt_prefix_is_stored_once_and_changes_no_token(block_size: int) -> None:
    m = tiny()
    rng = np.random.default_rng(4)
    system = rng.integers(0, 13, 10).tolist()  # every prompt starts with it
    prompts = [system + rng.integers(0, 13, int(n)).tolist() for n in rng.integers(0, 4, 8)]
    reqs, counts = [], {}
    for prefix_cache in (False, True):
        engine = Engine(m, 200, block_size, 6, prefix_cache=prefix_cache)
        batch = [Request(p, 12, temperature=0.7, seed=i, arrival=0.01 * i)
                 for i, p in enumerate(prompts)]
        res = replay(engine, batch, step_time=lambda info: 0.02)
        counts[prefix_cache] = (engine.shared_tokens, res.max_blocks_used)
        reqs.append(batch)
    assert counts[False][0] == 0 and counts[True][0] >= 9 * 5
    assert counts[True][1] < counts[False][1]  # fewer blocks at the peak
    for a, b in zip(*reqs):  # copy-on-write: neither parent nor child sees the other's writes
        want = generate_cached(m, a.prompt, 12, np.random.default_rng(a.seed), temperature=0.7)
        assert a.output == b.output == want


def test_fork_prefix_checks_its_arguments() -> None:
    pool = PagedKVCache(n_layers=1, n_kv_heads=1, head_dim=2, num_blocks=4, block_size=2)
    s = pool.sequence(0)
    s.reserve(3)
    s.advance(3)
    child = pool.fork_prefix(0, 1, 3)
    assert pool.tables[1] == pool.tables[0] and child.length == 3
    assert pool.blocks_needed(1, 1) == 1  # the shared, partly filled last block is copied
    with pytest.raises(ValueError, match="share"):
        pool.fork_prefix(0, 2, 4)
    with pytest.raises(ValueError, match="exists"):
        pool.fork_prefix(0, 1, 1)
