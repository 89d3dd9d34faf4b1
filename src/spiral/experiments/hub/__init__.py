"""Experiments of spiral.hub: Hugging Face checkpoints on our engine (stage 8, real weights)."""
