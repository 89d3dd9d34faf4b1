"""Experiments on positional information (stage 9)."""
