"""Alignment on a task whose truth we know: preferences, reward models, PPO, DPO and GRPO.

The task (:mod:`spiral.align.task`) scores names by a program, so every method's success is
a number — the true reward — next to its KL from the reference policy. Chapter: stage 16.
"""

from spiral.align.dpo import DPOConfig, train_dpo
from spiral.align.estimators import gae, group_advantages, kl_k1, kl_k2, kl_k3
from spiral.align.evaluation import evaluate_policy, true_reward_fn
from spiral.align.grpo import GRPOConfig, train_grpo
from spiral.align.models import ScalarHeadGPT, SFTConfig, sft_policy
from spiral.align.objectives import bradley_terry_loss, dpo_loss, ppo_clip_loss
from spiral.align.ppo import PPOConfig, train_ppo
from spiral.align.preferences import Pairs, make_pairs
from spiral.align.reward_model import RMConfig, evaluate_rm, train_reward_model
from spiral.align.task import NamesTask, bayes_accuracy, true_reward

__all__ = [
    "DPOConfig", "GRPOConfig", "NamesTask", "PPOConfig", "Pairs", "RMConfig", "SFTConfig",
    "ScalarHeadGPT", "bayes_accuracy", "bradley_terry_loss", "dpo_loss", "evaluate_policy",
    "evaluate_rm", "gae", "group_advantages", "kl_k1", "kl_k2", "kl_k3", "make_pairs",
    "ppo_clip_loss", "sft_policy", "train_dpo", "train_grpo", "train_ppo",
    "train_reward_model", "true_reward", "true_reward_fn",
]
