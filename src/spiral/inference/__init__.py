"""Inference: the KV cache and cached generation (stage 17).

Chapter: stage 17 (inference optimization).
"""

from spiral.inference.generate import generate_cached
from spiral.inference.kv_cache import KVCache, forward_cached

__all__ = ["KVCache", "forward_cached", "generate_cached"]
