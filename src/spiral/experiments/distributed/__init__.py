"""Experiments on distributed training: collectives, strategies, pipelines, ZeRO, the cost
model (stage 13)."""
