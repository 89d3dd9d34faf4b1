"""Experiments on architecture evolution: GPT-2 vs Llama blocks, GQA and the KV cache (stage 14)."""
