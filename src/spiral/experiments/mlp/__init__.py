"""Experiments on the MLP language model (stage 4)."""
