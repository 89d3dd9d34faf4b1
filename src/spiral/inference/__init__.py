"""Inference: the KV cache, cached generation, the paged KV cache and speculative decoding.

Chapter: stage 17 (inference optimization).
"""

from spiral.inference.generate import generate_cached
from spiral.inference.kv_cache import KVCache, forward_cached
from spiral.inference.paged import OutOfBlocks, PagedKVCache, PagedSequence
from spiral.inference.speculative import (
    SpeculativeOutput,
    expected_speedup,
    expected_tokens_per_round,
    speculative_generate,
)

__all__ = ["KVCache", "OutOfBlocks", "PagedKVCache", "PagedSequence", "SpeculativeOutput",
           "expected_speedup", "expected_tokens_per_round", "forward_cached", "generate_cached",
           "speculative_generate"]
