"""Experiments on backpropagation by hand and the fused ops (stage 3)."""
