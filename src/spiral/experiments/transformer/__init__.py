"""Experiments on multi-head attention and the transformer (stage 8)."""
