"""BatchNorm1d, LayerNorm and RMSNorm against torch.nn, finite differences and composed ops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd import Tensor, gradcheck
from spiral.nn import BatchNorm1d, LayerNorm, RMSNorm
from spiral.nn.norm import (
    BatchNormFn,
    composed_batch_norm,
    composed_rms_norm,
    rms_norm,
    running_stats_frozen,
)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.stage6


def _copy_affine(ours: BatchNorm1d | LayerNorm | RMSNorm, ref: torch.nn.Module,
                 rng: np.random.Generator) -> None:
    """Random gains/biases on both sides (ones/zeros would hide a wrong weight gradient)."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(ours, name, None)
            if p is not None:
                p.data[...] = rng.standard_normal(p.shape)
                getattr(ref, name).copy_(torch.from_numpy(p.data))


def _fwd_bwd(ours: object, ref: torch.nn.Module, x: np.ndarray, g: np.ndarray
             ) -> tuple[Tensor, torch.Tensor, Tensor, torch.Tensor]:
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), ref(xt)  # type: ignore[operator]
    yo.backward(g)
    yt.backward(torch.from_numpy(g))
    return xo, xt, yo, yt


def _assert_same(ours: object, ref: torch.nn.Module, xo: Tensor, xt: torch.Tensor, yo: Tensor,
                 yt: torch.Tensor, tol: float = 1e-10) -> None:
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), atol=tol, rtol=tol)
    for name in ("weight", "bias"):
        p = getattr(ours, name, None)
        if p is not None:
            np.testing.assert_allclose(p.grad, getattr(ref, name).grad.numpy(), atol=tol,
                                       rtol=tol)


# ------------------------------------------------------------------------- BatchNorm1d
@pytest.mark.parametrize("shape", [(16, 5), (8, 5, 7)])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_train_and_eval_match_torch_over_many_steps(shape: tuple[int, ...],
                                                              affine: bool) -> None:
    rng = np.random.default_rng(0)
    c = shape[1]
    ours = BatchNorm1d(c, affine=affine, dtype=np.float64)
    ref = torch.nn.BatchNorm1d(c, affine=affine, dtype=torch.float64)
    _copy_affine(ours, ref, rng)
    for step in range(40):  # the running averages drift towards the data's statistics
        x = 3.0 + 2.0 * rng.standard_normal(shape) * (1 + np.arange(c)).reshape(
            (1, c) + (1,) * (len(shape) - 2))
        g = rng.standard_normal(shape)
        for m in (ours, ref):
            if m.weight is not None:
                m.weight.grad = None
                m.bias.grad = None
        _assert_same(ours, ref, *_fwd_bwd(ours, ref, x, g))
        np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-12)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    ours.eval()
    ref.eval()
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    for m in (ours, ref):
        if m.weight is not None:
            m.weight.grad = None
            m.bias.grad = None
    _assert_same(ours, ref, *_fwd_bwd(ours, ref, x, g))
    assert int(ours.num_batches_tracked) == 40  # eval leaves the statistics alone


@pytest.mark.parametrize("momentum", [None, 0.3])
def test_batchnorm_momentum_none_is_cumulative_average(momentum: float | None) -> None:
    rng = np.random.default_rng(1)
    ours = BatchNorm1d(4, momentum=momentum, dtype=np.float64)
    ref = torch.nn.BatchNorm1d(4, momentum=momentum, dtype=torch.float64)
    xs = [rng.standard_normal((10, 4)) + i for i in range(5)]
    for x in xs:
        ours(Tensor(x))
        ref(torch.from_numpy(x))
    np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), atol=1e-12)
    if momentum is None:  # the plain mean of the batch means
        np.testing.assert_allclose(ours.running_mean, np.mean([x.mean(0) for x in xs], 0))


def test_batchnorm_without_running_stats_always_uses_the_batch() -> None:
    rng = np.random.default_rng(2)
    ours = BatchNorm1d(3, track_running_stats=False, dtype=np.float64).eval()
    ref = torch.nn.BatchNorm1d(3, track_running_stats=False, dtype=torch.float64).eval()
    _copy_affine(ours, ref, rng)
    x, g = rng.standard_normal((6, 3, 2)), rng.standard_normal((6, 3, 2))
    _assert_same(ours, ref, *_fwd_bwd(ours, ref, x, g))
    assert "running_mean" not in ours.state_dict()


def test_batchnorm_float32_matches_torch() -> None:
    rng = np.random.default_rng(3)
    ours, ref = BatchNorm1d(8), torch.nn.BatchNorm1d(8)
    x = (rng.standard_normal((32, 8)) * 5 + 2).astype(np.float32)
    g = rng.standard_normal((32, 8)).astype(np.float32)
    xo, xt, yo, yt = _fwd_bwd(ours, ref, x, g)
    assert yo.dtype == np.float32 and xo.grad.dtype == np.float32
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-5)


def test_batchnorm_state_dict_and_errors() -> None:
    bn = BatchNorm1d(3)
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked"}
    with pytest.raises(ValueError):
        bn(Tensor(np.ones((1, 3))))  # one value per channel: no variance to estimate
    with pytest.raises(ValueError):
        bn(Tensor(np.ones((4, 2))))
    with pytest.raises(ValueError):
        bn(Tensor(np.ones((4, 3, 2, 2))))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2)])
def test_batchnorm_gradcheck(training: bool, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    w = Tensor(rng.standard_normal(3), requires_grad=True)
    b = Tensor(rng.standard_normal(3), requires_grad=True)
    mean, var = (None, None) if training else (rng.standard_normal(3), rng.random(3) + 0.5)
    assert gradcheck(lambda x, w, b: BatchNormFn.apply(x, mean, var, 1e-5, w, b), [x, w, b])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), c=st.integers(1, 6), length=st.sampled_from([0, 1, 4]),
       seed=st.integers(0, 2**16))
def test_fused_batchnorm_equals_composed(n: int, c: int, length: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (n, c) if length == 0 else (n, c, length)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10)
    w, b, g = rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(shape)
    grads = []
    for fn in (lambda x, w, b: BatchNormFn.apply(x, None, None, 1e-5, w, b),
               composed_batch_norm):
        xs, ws, bs = (Tensor(a, requires_grad=True) for a in (x, w, b))
        y = fn(xs, ws, bs)
        y.backward(g)
        grads.append((y.data, xs.grad, ws.grad, bs.grad))
    for a, b_ in zip(*grads):
        np.testing.assert_allclose(a, b_, atol=1e-9, rtol=1e-7)


def test_batchnorm_gradient_is_orthogonal_to_ones_and_xhat() -> None:
    """The two correction terms: Σ_b ∂L/∂x = 0 and Σ_b x̂ ⊙ ∂L/∂x = 0 per channel (γ = 1)."""
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((64, 4)) * 3 + 1, requires_grad=True)
    y = BatchNormFn.apply(x, None, None, 0.0)
    y.backward(rng.standard_normal((64, 4)))
    xhat = (x.data - x.data.mean(0)) / x.data.std(0)
    np.testing.assert_allclose(x.grad.sum(0), 0, atol=1e-10)
    np.testing.assert_allclose((x.grad * xhat).sum(0), 0, atol=1e-10)


# ------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("shape,normalized", [((4, 6), 6), ((2, 3, 6), (6,)), ((2, 3, 4), (3, 4))])
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, False)])
def test_layernorm_matches_torch(shape: tuple[int, ...], normalized: int | tuple[int, ...],
                                 affine: bool, bias: bool) -> None:
    rng = np.random.default_rng(6)
    ours = LayerNorm(normalized, elementwise_affine=affine, bias=bias, dtype=np.float64)
    ref = torch.nn.LayerNorm(normalized, elementwise_affine=affine, bias=bias,
                             dtype=torch.float64)
    _copy_affine(ours, ref, rng)
    x, g = rng.standard_normal(shape) * 4 + 1, rng.standard_normal(shape)
    xo, xt, yo, yt = _fwd_bwd(ours, ref, x, g)
    _assert_same(ours, ref, xo, xt, yo, yt)
    assert yo.grad_fn == "LayerNormFnBackward"  # stage 3's fused op, not a re-derivation


# ------------------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize("shape,normalized", [((4, 6), 6), ((2, 3, 6), (6,)), ((2, 3, 4), (3, 4))])
@pytest.mark.parametrize("eps", [None, 1e-6, 0.1])
@pytest.mark.parametrize("affine", [True, False])
def test_rmsnorm_matches_torch(shape: tuple[int, ...], normalized: int | tuple[int, ...],
                               eps: float | None, affine: bool) -> None:
    rng = np.random.default_rng(7)
    ours = RMSNorm(normalized, eps=eps, elementwise_affine=affine, dtype=np.float64)
    ref = torch.nn.RMSNorm(normalized, eps=eps, elementwise_affine=affine, dtype=torch.float64)
    _copy_affine(ours, ref, rng)
    x, g = rng.standard_normal(shape) * 0.3 + 0.2, rng.standard_normal(shape)
    _assert_same(ours, ref, *_fwd_bwd(ours, ref, x, g))


def test_rmsnorm_float32_default_eps_matches_torch() -> None:
    rng = np.random.default_rng(8)
    ours, ref = RMSNorm(16), torch.nn.RMSNorm(16)
    x = (rng.standard_normal((5, 16)) * 1e-3).astype(np.float32)  # eps matters at this scale
    g = rng.standard_normal((5, 16)).astype(np.float32)
    xo, xt, yo, yt = _fwd_bwd(ours, ref, x, g)
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-2)


def test_rmsnorm_gradcheck_and_composed() -> None:
    rng = np.random.default_rng(9)
    x = Tensor(rng.standard_normal((3, 2, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((2, 5)), requires_grad=True)
    assert gradcheck(lambda x, w: rms_norm(x, (2, 5), w, 1e-6), [x, w])
    assert gradcheck(lambda x: rms_norm(x, 5), [x])
    g = rng.standard_normal((3, 2, 5))
    out = []
    for fn in (rms_norm, composed_rms_norm):
        xs, ws = Tensor(x.data, requires_grad=True), Tensor(w.data, requires_grad=True)
        y = fn(xs, (2, 5), ws, 1e-6)
        y.backward(g)
        out.append((y.data, xs.grad, ws.grad))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_rmsnorm_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        RMSNorm(4)(Tensor(np.ones((2, 5))))


def test_running_stats_frozen_uses_batch_statistics_and_leaves_buffers() -> None:
    rng = np.random.default_rng(5)
    bn = BatchNorm1d(4, momentum=0.3, dtype=np.float64)
    bn(Tensor(rng.standard_normal((8, 4))))  # some history in the buffers
    before = {k: v.copy() for k, v in bn.state_dict().items()}
    x = Tensor(rng.standard_normal((16, 4)) * 3 + 1)
    with running_stats_frozen(bn):
        y = bn(x)
    ref = torch.nn.functional.batch_norm(torch.tensor(x.data), None, None, training=True)
    np.testing.assert_allclose(y.data, ref.numpy(), atol=1e-12)  # batch statistics
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert bn.track_running_stats  # restored on exit
    bn(x)
    assert int(bn.num_batches_tracked) == int(before["num_batches_tracked"]) + 1


def test_batchnorm_probe_leaves_the_running_averages_alone() -> None:
    """Regression (stage 6 experiment): the probe ran 4,096 held-out contexts through the
    model in train mode, moving every running mean by momentum x (held-out mean) and
    counting a batch, before it compared the running mean with that held-out mean."""
    from spiral.experiments.stability.batchnorm_stats import _probe
    from spiral.experiments.stability.models import NormedMLP, mlp_config

    rng = np.random.default_rng(0)
    model = NormedMLP(mlp_config(11, n_layers=2, d_hidden=16), "batchnorm", rng=rng)
    px, py = rng.integers(0, 11, (256, 3)), rng.integers(0, 11, 256)
    model.train()
    model.context_logits(px[:32])  # one training step's worth of statistics
    before = {k: v.copy() for k, v in model.state_dict().items() if "norms" in k}
    out = _probe(model, px, py, batch=32)
    for k, v in model.state_dict().items():
        if k in before:
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    np.testing.assert_array_equal(out["run_mean"], before["norms.0.running_mean"])
    assert model.training
