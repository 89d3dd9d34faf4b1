"""Experiments on alignment: reward models, PPO, DPO and GRPO on a verifiable task (stage 16)."""
