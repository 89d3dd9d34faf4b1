"""Experiments of stage 12: checkpointing, flash attention, mixed precision."""
