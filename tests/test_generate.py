"""Sampling: temperature, top-k, top-p, seeding, stop tokens."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor
from spiral.generate import filter_probs, generate

pytestmark = pytest.mark.stage4


class FixedModel:
    """Next-token logits that ignore the context."""

    context_length = 4

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def __call__(self, x: np.ndarray) -> Tensor:
        return Tensor(np.broadcast_to(self.logits, (*x.shape, self.logits.size)).copy())


LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


def test_temperature_zero_is_argmax_and_one_is_the_model() -> None:
    assert filter_probs(LOGITS, temperature=0).tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(filter_probs(LOGITS), [0.5, 0.3, 0.15, 0.05])
    hot = filter_probs(LOGITS, temperature=100.0)
    assert hot.max() - hot.min() < 0.02


def test_top_k_and_top_p_keep_the_right_sets() -> None:
    np.testing.assert_allclose(filter_probs(LOGITS, top_k=2), [0.625, 0.375, 0, 0])
    # 0.5 < 0.7 <= 0.5 + 0.3: the nucleus is the two most likely tokens
    np.testing.assert_allclose(filter_probs(LOGITS, top_p=0.7), [0.625, 0.375, 0, 0])
    np.testing.assert_allclose(filter_probs(LOGITS, top_p=0.81), np.array([0.5, 0.3, 0.15, 0]) / 0.95)


@settings(deadline=None, max_examples=50)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=12), st.floats(0.05, 1.0),
       st.integers(1, 12), st.floats(0.1, 3.0))
@example(z=[0.0, 4.97e-66], top_p=0.5, top_k=2, temperature=1.0)  # a near-tie CI once found
def test_filtered_probabilities_are_a_distribution(z: list[float], top_p: float, top_k: int,
                                                    temperature: float) -> None:
    p = filter_probs(np.array(z), temperature, top_k, top_p)
    assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-9
    kth = np.sort(np.array(z) / temperature)[-min(top_k, len(z))]
    assert np.all(np.array(z)[p > 0] / temperature >= kth)  # only the top k (ties kept, as torch)
    assert p[int(np.argmax(z))] > 0  # the most likely token always survives


def test_sampling_frequencies_follow_the_model() -> None:
    out = generate(FixedModel(LOGITS), [0], 4000, np.random.default_rng(0))
    freq = np.bincount(out, minlength=4) / len(out)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_seeded_and_stops_at_stop_token() -> None:
    model = FixedModel(LOGITS)
    a = generate(model, [1, 2], 50, np.random.default_rng(7), top_k=3)
    b = generate(model, [1, 2], 50, np.random.default_rng(7), top_k=3)
    assert a == b and 3 not in a
    s = generate(model, [0], 1000, np.random.default_rng(1), stop_token=2)
    assert s[-1] == 2 and 2 not in s[:-1]
    with pytest.raises(ValueError):
        generate(model, [], 5, np.random.default_rng(0))


def test_near_tie_keeps_the_argmax_as_torch_top_p_does() -> None:
    """Equal float64 probabilities, logits 5e-66 apart: the larger logit is the one kept."""
    p = filter_probs(np.array([0.0, 4.97e-66]), top_p=0.5)
    assert p.tolist() == [0.0, 1.0]


def test_top_p_matches_the_torch_rule_on_random_logits() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for _ in range(200):
        z = rng.normal(size=int(rng.integers(2, 20))) * 3
        top_p = float(rng.uniform(0.05, 1.0))
        t = torch.tensor(z)
        sorted_logits, idx = torch.sort(t, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum <= 1 - top_p
        remove[-1] = False
        t[idx[remove]] = -float("inf")
        expected = t.softmax(-1).numpy()
        np.testing.assert_allclose(filter_probs(z, top_p=top_p), expected, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(top_p=2.0), dict(top_p=0.0), dict(top_p=-0.1),
                                    dict(top_k=0), dict(top_k=-3), dict(temperature=-1.0),
                                    dict(temperature=float("nan"))])
def test_out_of_range_sampling_options_are_errors(kwargs) -> None:
    with pytest.raises(ValueError, match="must be"):
        filter_probs(LOGITS, **kwargs)
