"""Stage 17: the roofline's counts agree with stage 14's FLOP count and with the measured
cache; decode sits at about 2/itemsize FLOP per byte, prefill climbs with the prompt."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.inference import (
    KVCache,
    attainable,
    forward_bytes,
    forward_flops_cached,
    measure_bandwidth,
    measure_peak_flops,
)
from spiral.models.gpt import GPTConfig
from spiral.scaling.flops import forward_flops, matmul_parameters

pytestmark = pytest.mark.stage17

CFG = GPTConfig(vocab_size=256, context_length=256, n_layers=6, n_heads=6, n_kv_heads=3,
                d_model=192, norm_type="rmsnorm", ffn_type="swiglu", positional="rope")


@pytest.mark.parametrize("T", [1, 7, 256])
def test_a_prefill_costs_what_the_uncached_forward_costs(T: int) -> None:
    assert forward_flops_cached(CFG, T) == forward_flops(CFG, T)


def test_prefill_plus_decodes_cost_the_sum_of_their_rectangles() -> None:
    P, n = 10, 5  # attention: Σ_t 4·L·H·hd·(t + 1) over the decode steps
    total = forward_flops_cached(CFG, P) + sum(forward_flops_cached(CFG, 1, P + i)
                                               for i in range(n))
    attn = 4 * CFG.n_layers * CFG.d_model * (P * P + sum(P + i + 1 for i in range(n)))
    assert total == 2 * matmul_parameters(CFG) * (P + n) + attn


def test_the_cache_term_of_the_traffic_is_the_measured_cache() -> None:
    t = 100
    extra = forward_bytes(CFG, 1, t) - forward_bytes(CFG, 1, 0)
    cache = KVCache(CFG.n_layers, 1, CFG.kv_heads, CFG.head_dim, capacity=t)
    assert extra == cache.nbytes == t * CFG.kv_cache_bytes_per_token(4)


def test_decode_intensity_is_about_two_over_itemsize_and_prefill_grows() -> None:
    dec = forward_flops_cached(CFG, 1, 10) / forward_bytes(CFG, 1, 10)
    assert 0.45 < dec < 0.55  # 2 FLOPs per 4-byte weight, give or take attention and cache
    ints = [forward_flops_cached(CFG, T) / forward_bytes(CFG, T) for T in (1, 16, 128)]
    assert ints[0] < ints[1] < ints[2] and ints[2] > 30 * dec
    batch = forward_flops_cached(CFG, 1, 10, 8) / forward_bytes(CFG, 1, 10, 8)
    assert batch > 6 * dec  # eight rows share one read of the weights


def test_the_roofline_is_the_lower_of_its_two_roofs() -> None:
    i = np.array([0.1, 1.0, 100.0])
    np.testing.assert_allclose(attainable(i, 1e11, 1e10), [1e9, 1e10, 1e11])


def test_the_measured_machine_is_plausible() -> None:
    peak, bw = measure_peak_flops(n=256, repeats=3), measure_bandwidth(1 << 24, repeats=3)
    assert 1e8 < peak < 1e14 and 1e8 < bw < 1e13, (peak, bw)
    with pytest.raises(ValueError, match="n_new"):
        forward_flops_cached(CFG, 0)
