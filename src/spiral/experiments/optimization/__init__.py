"""Experiments on optimizers and their dynamics (stage 5)."""
