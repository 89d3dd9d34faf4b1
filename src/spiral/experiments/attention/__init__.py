"""Experiments on attention from first principles (stage 7)."""
