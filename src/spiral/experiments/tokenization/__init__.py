"""Experiments on tokenization (stage 10)."""
