"""Each method moves a tiny policy the way its objective says (stage 16, seconds each)."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.align import (
    DPOConfig,
    GRPOConfig,
    NamesTask,
    PPOConfig,
    RMConfig,
    ScalarHeadGPT,
    evaluate_rm,
    make_pairs,
    train_dpo,
    train_grpo,
    train_ppo,
    train_reward_model,
    true_reward_fn,
)
from spiral.align.dpo import sequence_logprobs
from spiral.align.rollout import token_logprobs_np
from spiral.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.stage16


@pytest.fixture(scope="module")
def task() -> NamesTask:
    return NamesTask.build()


def _tiny(task: NamesTask) -> GPT:
    cfg = GPTConfig(vocab_size=task.tokenizer.vocab_size, context_length=task.seq_len,
                    n_layers=1, n_heads=2, d_model=16)
    return GPT(cfg, rng=np.random.default_rng(0))


def test_pairs_follow_the_bradley_terry_labelling(task: NamesTask) -> None:
    pairs = make_pairs(_tiny(task), task, 600, 0.1, np.random.default_rng(0))
    assert len(pairs) == 600
    # the chosen has the higher true reward about as often as Bradley–Terry predicts
    d = pairs.r_chosen - pairs.r_rejected
    p_better = 1 / (1 + np.exp(-np.abs(d) / 0.1))
    observed = np.mean((d > 0)[d != 0])
    expected = np.mean(p_better[d != 0])
    assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / np.sum(d != 0))


def test_reward_model_learns_above_chance(task: NamesTask) -> None:
    rng = np.random.default_rng(0)
    pairs = make_pairs(_tiny(task), task, 800, 0.05, rng)
    rm = ScalarHeadGPT(_tiny(task).config, rng=rng)
    hist = train_reward_model(rm, pairs.subset(slice(0, 600)), RMConfig(steps=150, lr=3e-3), rng)
    assert np.mean([h["loss"] for h in hist[-20:]]) < np.mean([h["loss"] for h in hist[:20]])
    ev = evaluate_rm(rm, pairs.subset(slice(600, 800)), 0.05)
    assert 0.6 < ev["expected_accuracy"] <= ev["bayes_accuracy"] + 1e-12


def test_dpo_raises_the_chosen_over_the_rejected(task: NamesTask) -> None:
    rng = np.random.default_rng(1)
    ref = _tiny(task)
    pairs = make_pairs(ref, task, 64, 0.1, rng)
    policy = _tiny(task)
    train_dpo(policy, ref, pairs, task, DPOConfig(steps=30, lr=3e-3, eval_every=30,
                                                  eval_samples=8), rng)
    def margin(m: GPT) -> float:
        w = sequence_logprobs(token_logprobs_np(m, pairs.chosen), pairs.mask_chosen)
        ell = sequence_logprobs(token_logprobs_np(m, pairs.rejected), pairs.mask_rejected)
        return float(np.mean(w - ell))
    assert margin(policy) > margin(ref) + 1.0


@pytest.mark.parametrize("method", ["ppo", "grpo"])
def test_policy_gradient_methods_raise_the_true_reward(task: NamesTask, method: str) -> None:
    rng = np.random.default_rng(2)
    ref, policy = _tiny(task), _tiny(task)
    reward = true_reward_fn(task)
    if method == "ppo":
        hist = train_ppo(policy, ref, ScalarHeadGPT(ref.config, rng=rng), task, reward,
                         PPOConfig(iterations=25, lr=3e-3, kl_coef=0.01, eval_every=25,
                                   eval_samples=128), rng)
        assert 0 <= hist[-1]["clipfrac"] <= 1
    else:
        hist = train_grpo(policy, ref, task, reward,
                          GRPOConfig(iterations=25, lr=3e-3, kl_coef=0.01, eval_every=25,
                                     eval_samples=128), rng)
    assert hist[0]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert hist[-1]["true_reward"] > hist[0]["true_reward"] + 0.05
    assert hist[-1]["kl"] > 0
