"""Experiments on automatic differentiation: graphs, modes, memory (stage 2)."""
