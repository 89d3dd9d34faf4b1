"""The MLP language model: shapes, the evaluator protocol, whole-model gradients, torch parity."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor, gradcheck_directional
from spiral.evaluate import LanguageModel, evaluate
from spiral.models import MLPConfig, MLPLanguageModel
from spiral.nn import functional as F

pytestmark = pytest.mark.stage4


def tiny(dtype: type = np.float64, **kw: object) -> MLPLanguageModel:
    cfg = MLPConfig(**{"vocab_size": 7, "n_context": 3, "d_embed": 4, "d_hidden": 5,
                       "n_layers": 2, "context_length": 16, **kw})  # type: ignore[arg-type]
    return MLPLanguageModel(cfg, rng=np.random.default_rng(0), dtype=dtype)


def test_shapes_and_protocol() -> None:
    m = tiny(np.float32)
    assert isinstance(m, LanguageModel)
    x = np.random.default_rng(1).integers(0, 7, (3, 10))
    assert m(x).shape == (3, 10, 7)
    assert m.window_nll(x).shape == (3, 9)
    n_params = 8 * 4 + (12 * 5 + 5) + (5 * 5 + 5) + (5 * 7 + 7)
    assert m.num_parameters() == n_params


def test_contexts_are_the_previous_tokens_with_padding() -> None:
    m = tiny()
    ctx = m.contexts(np.array([[1, 2, 3, 4]]))
    pad = m.pad_id
    assert ctx[0].tolist() == [[pad, pad, 1], [pad, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_prediction_depends_only_on_last_n_context_tokens() -> None:
    m = tiny()
    a = np.array([[0, 1, 2, 3, 4, 5]])
    b = np.array([[6, 6, 2, 3, 4, 5]])  # differs only more than n_context tokens back
    np.testing.assert_array_equal(m(a).data[0, -1], m(b).data[0, -1])
    assert not np.allclose(m(a).data[0, 2], m(b).data[0, 2])


def test_window_nll_is_log_softmax_of_forward() -> None:
    m = tiny()
    w = np.random.default_rng(2).integers(0, 7, (2, 6))
    logits = m(w[:, :-1]).data
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, w[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(m.window_nll(w), expected, atol=1e-12)


def test_untrained_model_is_near_uniform() -> None:
    m = tiny(np.float32, head_init_scale=0.01)
    ids = np.random.default_rng(3).integers(0, 7, 500)
    assert abs(evaluate(m, ids).nats - np.log(7)) < 0.05


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "silu"])
def test_whole_model_gradient_matches_finite_differences(activation: str) -> None:
    m = tiny(activation=activation, dropout=0.0)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 7, (2, 5))
    y = rng.integers(0, 7, (2, 5))
    params = list(m.parameters())

    def loss(*_: Tensor) -> Tensor:
        return F.cross_entropy(m(x), y)

    assert gradcheck_directional(loss, params, n_directions=4, rng=rng)


def test_forward_and_gradients_match_torch() -> None:
    torch = pytest.importorskip("torch")
    m = tiny()
    x = np.random.default_rng(5).integers(0, 7, (2, 6))
    y = np.random.default_rng(6).integers(0, 7, (2, 6))
    loss = F.cross_entropy(m(x), y)
    loss.backward()
    sd = {k: torch.tensor(v, requires_grad=True) for k, v in m.state_dict().items()}
    ctx = torch.from_numpy(np.ascontiguousarray(m.contexts(x)))
    h = sd["embedding.weight"][ctx].reshape(2, 6, -1)
    for i in range(2):
        h = torch.tanh(h @ sd[f"hidden.{i}.weight"].T + sd[f"hidden.{i}.bias"])
    logits = h @ sd["head.weight"].T + sd["head.bias"]
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), torch.from_numpy(y).reshape(-1))
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-12
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, sd[name].grad.numpy(), atol=1e-12, err_msg=name)
