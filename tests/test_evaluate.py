"""The shared evaluator: every position scored once, nats/bits/perplexity consistent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spiral.evaluate import EvalResult, evaluate, windows_of

pytestmark = pytest.mark.foundation


class Recorder:
    """A model that records which (prefix length, target) pairs it was asked to score."""

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length
        self.targets: list[int] = []

    def window_nll(self, windows: np.ndarray) -> np.ndarray:
        assert windows.shape[1] <= self.context_length + 1
        self.targets.extend(windows[:, 1:].ravel().tolist())
        return np.ones((windows.shape[0], windows.shape[1] - 1)) * 0.5


@pytest.mark.parametrize("n, T", [(2, 1), (10, 3), (101, 10), (64, 64), (65, 64), (1000, 7)])
def test_every_token_after_the_first_is_scored_exactly_once(n, T):
    tokens = np.arange(n)
    m = Recorder(T)
    res = evaluate(m, tokens, batch_size=4)
    assert sorted(m.targets) == list(range(1, n))
    assert res.n_tokens == n - 1
    assert res.nats == pytest.approx(0.5)


def test_windows_overlap_by_exactly_one_token():
    w = windows_of(np.arange(11), 5)
    assert [b.tolist() for b in w] == [[[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9, 10]]]


def test_units_are_consistent():
    r = EvalResult(nats=math.log(65), n_tokens=10)
    assert r.perplexity == pytest.approx(65)
    assert r.bits == pytest.approx(math.log2(65))


def test_bad_model_output_shape_is_caught():
    class Bad:
        context_length = 4

        def window_nll(self, w):
            return np.zeros(w.shape)

    with pytest.raises(ValueError, match="returned shape"):
        evaluate(Bad(), np.arange(20))


def test_bad_input_is_caught():
    with pytest.raises(ValueError, match="1-D"):
        evaluate(Recorder(4), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="two tokens"):
        evaluate(Recorder(4), np.arange(1))
