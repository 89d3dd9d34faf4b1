"""The attention language model: shapes, causality end to end, evaluator protocol, gradients."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.autograd.gradcheck import gradcheck_directional
from spiral.evaluate import LanguageModel, evaluate
from spiral.models import AttentionLanguageModel, AttentionLMConfig
from spiral.nn import functional as F

pytestmark = pytest.mark.stage7


def _model(dtype: type = np.float32, **kw: object) -> AttentionLanguageModel:
    cfg = AttentionLMConfig(vocab_size=11, context_length=8, d_model=12, d_hidden=16,
                            **kw)  # type: ignore[arg-type]
    return AttentionLanguageModel(cfg, rng=np.random.default_rng(0), dtype=dtype)


def test_shapes_and_protocol() -> None:
    m = _model()
    assert isinstance(m, LanguageModel)
    ids = np.random.default_rng(1).integers(0, 11, (3, 8))
    assert m(ids).shape == (3, 8, 11)
    assert m.window_nll(np.concatenate([ids, ids[:, :1]], 1)).shape == (3, 8)
    w = m.attention_weights(ids)
    assert w.shape == (3, 8, 8)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(w, k=1) == 0.0)
    with pytest.raises(ValueError, match="context_length"):
        m(np.zeros((1, 9), dtype=np.int64))


def test_future_tokens_never_change_past_predictions() -> None:
    """Causality through the whole model: logits at t depend on tokens ≤ t only (exactly)."""
    m = _model(np.float64)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 11, (2, 8))
    base = m(ids).data
    for t in range(7):
        other = ids.copy()
        other[:, t + 1:] = rng.integers(0, 11, (2, 7 - t))
        np.testing.assert_array_equal(m(other).data[:, : t + 1], base[:, : t + 1])


def test_prefix_logits_equal_full_window_logits() -> None:
    m = _model(np.float64)
    ids = np.random.default_rng(3).integers(0, 11, (2, 8))
    np.testing.assert_allclose(m(ids[:, :5]).data, m(ids).data[:, :5], rtol=1e-12, atol=1e-12)


def test_without_causal_mask_the_future_leaks() -> None:
    m = _model(np.float64, causal=False)
    ids = np.random.default_rng(4).integers(0, 11, (1, 8))
    other = ids.copy()
    other[0, -1] = (ids[0, -1] + 1) % 11
    assert not np.allclose(m(other).data[:, 0], m(ids).data[:, 0])


def test_whole_model_gradients_directional_float64() -> None:
    m = _model(np.float64)
    ids = np.random.default_rng(5).integers(0, 11, (2, 8))
    y = np.random.default_rng(6).integers(0, 11, (2, 8))
    params = list(m.parameters())
    assert gradcheck_directional(lambda *ps: F.cross_entropy(m(ids), y), params,
                                 n_directions=3, atol=1e-6)


def test_evaluator_scores_every_token() -> None:
    m = _model()
    tokens = np.random.default_rng(7).integers(0, 11, 50)
    r = evaluate(m, tokens)
    assert r.n_tokens == 49
    assert 0 < r.nats < 10


def test_learns_a_copy_task() -> None:
    """A sequence that repeats with period 5 is predictable from 5 steps back: loss falls."""
    from spiral.nn.module import param_groups
    from spiral.optim import AdamW

    m = _model()
    rng = np.random.default_rng(8)
    opt = AdamW(param_groups(m, 0.0), lr=1e-2)
    first = last = 0.0
    for step in range(300):
        pattern = rng.integers(0, 11, (8, 5))
        seq = np.tile(pattern, (1, 2))[:, :9]  # (8, 9): positions 5.. repeat 0..
        loss = F.cross_entropy(m(seq[:, :-1]), seq[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        first = float(loss.item()) if step == 0 else first
        last = float(loss.item())
    # only positions ≥ 4 are predictable (4 of 8 targets): perfect copying halves the loss
    assert last < 0.75 * first, (first, last)


def test_float_input_tensor_is_accepted() -> None:
    m = _model()
    ids = np.random.default_rng(9).integers(0, 11, (1, 4))
    np.testing.assert_array_equal(m(Tensor(ids)).data, m(ids).data)


def test_shared_recipe_uses_the_learning_rate_tuned_on_the_tune_split() -> None:
    """The heatmap experiment reuses Recipe().lr; it must be the rate that the committed
    tuning (attention_scale_training, tune split) chose for both the attention model and the
    MLP — otherwise the chapter's seed-0 model and the table's would differ."""
    import json
    from pathlib import Path

    from spiral.experiments.attention.common import Recipe

    path = Path(__file__).parents[2] / "docs/results/attention_scale_training/results.json"
    if not path.is_file():
        pytest.skip("no committed results")
    best = json.loads(path.read_text())["results"]["best_lr"]
    assert best["scaled"] == Recipe().lr == best["mlp"]
