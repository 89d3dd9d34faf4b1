"""Experiments on where training memory goes, predicted and measured (stage 11)."""
