"""Experiments on n-gram language models, corpora and compression (stage 1)."""
