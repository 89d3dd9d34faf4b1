"""Inference: the KV cache, cached generation and the paged KV cache (stage 17).

Chapter: stage 17 (inference optimization).
"""

from spiral.inference.generate import generate_cached
from spiral.inference.kv_cache import KVCache, forward_cached
from spiral.inference.paged import OutOfBlocks, PagedKVCache, PagedSequence

__all__ = ["KVCache", "OutOfBlocks", "PagedKVCache", "PagedSequence", "forward_cached",
           "generate_cached"]
