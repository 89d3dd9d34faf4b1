"""Linear, Embedding and the activations against torch.nn: forward, backward, init statistics."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.nn import GELU, Embedding, Linear, ReLU, SiLU, SwiGLU, Tanh

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage4


def test_linear_matches_torch_forward_backward() -> None:
    rng = np.random.default_rng(0)
    ours = Linear(5, 3, rng=rng, dtype=np.float64)
    ref = torch.nn.Linear(5, 3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(ours.weight.data))
        ref.bias.copy_(torch.from_numpy(ours.bias.data))
    x = rng.standard_normal((2, 4, 5))
    g = rng.standard_normal((2, 4, 3))
    xt = torch.tensor(x, requires_grad=True)
    xo = Tensor(x, requires_grad=True)
    y = ours(xo)
    yt = ref(xt)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.bias.grad, ref.bias.grad.numpy(), atol=1e-12)


def test_linear_init_statistics_match_torch() -> None:
    fan_in, fan_out = 256, 512
    ours = Linear(fan_in, fan_out, rng=np.random.default_rng(0))
    torch.manual_seed(0)
    ref = torch.nn.Linear(fan_in, fan_out)
    w_ref = ref.weight.detach().numpy()
    bound = 1 / np.sqrt(fan_in)
    for w in (ours.weight.data, w_ref):
        assert np.abs(w).max() <= bound
    # uniform on [-b, b]: sd = b/sqrt(3); both samples agree with it and with each other
    np.testing.assert_allclose(ours.weight.data.std(), bound / np.sqrt(3), rtol=0.01)
    np.testing.assert_allclose(ours.weight.data.std(), w_ref.std(), rtol=0.01)
    np.testing.assert_allclose(ours.bias.data.std(), ref.bias.detach().numpy().std(), rtol=0.15)
    assert ours.weight.dtype == np.float32 and ours.weight.shape == tuple(ref.weight.shape)


def test_linear_without_bias() -> None:
    lin = Linear(3, 2, bias=False, rng=np.random.default_rng(0))
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]


def test_embedding_matches_torch_and_one_hot_product() -> None:
    rng = np.random.default_rng(1)
    ours = Embedding(6, 4, rng=rng, dtype=np.float64)
    ref = torch.nn.Embedding(6, 4, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(ours.weight.data))
    ids = np.array([[0, 2, 2], [5, 2, 1]])  # repeated ids must accumulate gradient
    g = rng.standard_normal((2, 3, 4))
    y = ours(ids)
    yt = ref(torch.from_numpy(ids))
    np.testing.assert_array_equal(y.data, yt.detach().numpy())
    np.testing.assert_allclose(y.data, np.eye(6)[ids] @ ours.weight.data, atol=1e-15)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), atol=1e-12)


def test_embedding_init_is_standard_normal_like_torch() -> None:
    w = Embedding(1000, 64, rng=np.random.default_rng(0)).weight.data
    torch.manual_seed(0)
    w_ref = torch.nn.Embedding(1000, 64).weight.detach().numpy()
    for arr in (w, w_ref):
        assert abs(arr.mean()) < 0.01 and abs(arr.std() - 1.0) < 0.01


def test_embedding_rejects_bad_ids() -> None:
    emb = Embedding(3, 2, rng=np.random.default_rng(0))
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        emb(np.array([3]))
    with pytest.raises(TypeError):
        emb(np.array([0.5]))


@pytest.mark.parametrize("ours,ref", [
    (ReLU(), torch.nn.ReLU()), (Tanh(), torch.nn.Tanh()), (GELU(), torch.nn.GELU()),
    (GELU("tanh"), torch.nn.GELU(approximate="tanh")), (SiLU(), torch.nn.SiLU()),
])
def test_activations_match_torch(ours: object, ref: object) -> None:
    x = np.random.default_rng(2).standard_normal((3, 7)) * 3
    g = np.random.default_rng(3).standard_normal((3, 7))
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, yt = ours(xo), ref(xt)  # type: ignore[operator]
    np.testing.assert_allclose(y.data, yt.detach().numpy(), atol=1e-12)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), atol=1e-10)


def test_swiglu_matches_torch_formula() -> None:
    rng = np.random.default_rng(4)
    block = SwiGLU(4, 6, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 4))
    xt = torch.from_numpy(x)
    w1, w2, w3 = (torch.from_numpy(m.weight.data) for m in (block.w1, block.w2, block.w3))
    ref = (torch.nn.functional.silu(xt @ w1.T) * (xt @ w3.T)) @ w2.T
    np.testing.assert_allclose(block(Tensor(x)).data, ref.numpy(), atol=1e-12)
