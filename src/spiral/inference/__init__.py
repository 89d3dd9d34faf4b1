"""Inference: the KV cache, cached generation, the paged KV cache, speculative decoding,
batched decoding with a request scheduler, the roofline, and an OpenAI-style server.

Chapter: stage 17 (inference optimization).
"""

from spiral.inference.batched import forward_batch
from spiral.inference.generate import generate_cached
from spiral.inference.kv_cache import KVCache, forward_cached, supports_cache
from spiral.inference.paged import OutOfBlocks, PagedKVCache, PagedSequence
from spiral.inference.roofline import (
    attainable,
    forward_bytes,
    forward_flops_cached,
    measure_bandwidth,
    measure_peak_flops,
)
from spiral.inference.scheduler import Engine, Request, StepInfo
from spiral.inference.speculative import (
    SpeculativeOutput,
    expected_speedup,
    expected_tokens_per_round,
    speculative_generate,
)
from spiral.inference.trace import TraceResult, poisson_trace, replay

__all__ = ["Engine", "KVCache", "OutOfBlocks", "PagedKVCache", "PagedSequence", "Request",
           "SpeculativeOutput", "StepInfo", "TraceResult", "attainable", "expected_speedup",
           "expected_tokens_per_round", "forward_batch", "forward_bytes", "forward_cached",
           "forward_flops_cached", "generate_cached", "measure_bandwidth",
           "measure_peak_flops", "poisson_trace", "replay", "speculative_generate",
           "supports_cache"]
