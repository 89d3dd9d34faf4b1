"""Experiments on initialization and normalization (stage 6)."""
