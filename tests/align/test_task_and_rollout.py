"""The names task, preference labelling, batched sampling and log-probabilities (stage 16)."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.align.rollout import completion_mask, next_token_kl, sample, token_logprobs_np
from spiral.align.task import (
    NamesTask,
    bayes_accuracy,
    expected_accuracy,
    preference_probability,
    true_reward,
)
from spiral.generate import filter_probs
from spiral.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.stage16


@pytest.fixture(scope="module")
def task() -> NamesTask:
    return NamesTask.build()


def _tiny(task: NamesTask, seed: int) -> GPT:
    cfg = GPTConfig(vocab_size=task.tokenizer.vocab_size, context_length=task.seq_len,
                    n_layers=1, n_heads=2, d_model=16, init_std=0.5)
    return GPT(cfg, rng=np.random.default_rng(seed))


def test_true_reward_is_the_share_of_vowels() -> None:
    assert true_reward("anna") == 0.5
    assert true_reward("bob") == pytest.approx(1 / 3)
    assert true_reward("aia") == 1.0
    assert true_reward("") == 0.0


def test_bayes_accuracy_is_the_best_expected_accuracy() -> None:
    rng = np.random.default_rng(0)
    r1, r2 = rng.random(500), rng.random(500)
    tau = 0.1
    best = bayes_accuracy(r1, r2, tau)
    assert expected_accuracy(r1, r2, r1, r2, tau) == pytest.approx(best)  # truth attains it
    for _ in range(20):  # any other scorer does no better
        s1, s2 = r1 + rng.normal(0, 0.1, 500), r2 + rng.normal(0, 0.1, 500)
        assert expected_accuracy(s1, s2, r1, r2, tau) <= best + 1e-12
    # and it is the mean of max(p, 1-p): one pair by hand
    p = 1 / (1 + np.exp(-(0.6 - 0.4) / tau))
    assert bayes_accuracy(np.array([0.6]), np.array([0.4]), tau) == pytest.approx(p)
    with pytest.raises(ValueError, match="temperature"):
        preference_probability(r1, r2, 0.0)


def test_encode_decode_round_trip_and_prompts(task: NamesTask) -> None:
    rows = task.encode(["emma", "x"])
    assert rows.shape == (2, task.seq_len)
    assert task.decode(rows) == ["emma", "x"]
    p = task.sample_prompts(50, np.random.default_rng(0))
    assert p.shape == (50, 2) and np.all(p[:, 0] == task.end_id) and np.all(p[:, 1] != task.end_id)
    with pytest.raises(ValueError, match="letters"):
        task.encode([""])


def test_sample_layout_mask_and_log_probabilities(task: NamesTask) -> None:
    model = _tiny(task, 0)
    prompts = task.sample_prompts(6, np.random.default_rng(1))
    tokens, mask = sample(model, prompts, task.seq_len - 2, task.end_id, np.random.default_rng(2))
    assert np.array_equal(tokens[:, :2], prompts)
    lengths = mask.sum(1).astype(int)
    for row, n in zip(tokens, lengths, strict=True):
        body = row[2:2 + n]
        ended = body[-1] == task.end_id
        assert ended or n == task.seq_len - 2
        assert np.all(body[:-1] != task.end_id)           # no end marker before the last
        assert np.all(row[2 + n:] == task.end_id)         # padding
    assert np.array_equal(mask, completion_mask(2, lengths, tokens.shape[1]))
    # the log-probabilities agree with the sampler's own distribution
    lp = token_logprobs_np(model, tokens)
    logits = model(tokens[:1, :3]).data[0, -1]
    assert lp[0, 2] == pytest.approx(np.log(filter_probs(logits)[tokens[0, 3]]), abs=1e-5)


def test_next_token_kl_is_zero_to_itself_and_positive_otherwise(task: NamesTask) -> None:
    a, b = _tiny(task, 0), _tiny(task, 1)
    tokens, mask = sample(a, task.sample_prompts(8, np.random.default_rng(0)),
                          task.seq_len - 2, task.end_id, np.random.default_rng(1))
    np.testing.assert_allclose(next_token_kl(a, a, tokens, mask), 0.0, atol=1e-9)
    assert np.all(next_token_kl(a, b, tokens, mask) > 0)
