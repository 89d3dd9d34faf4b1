"""Fused ops == composed-primitive ops == PyTorch, forward and backward (stage 3).

One table drives the checks: every entry builds random inputs for a hypothesis-drawn shape
and names the fused op, its composed reference (stage-2 primitives) and the torch op. In
float64 the three agree to 1e-9; in float32 fused and torch agree to 2e-5 (unit roundoff
2**-24 times reduction lengths <= 64, on O(1) values), composed and fused likewise.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral.autograd.tensor import Tensor
from spiral.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.stage3

SETTINGS = settings(deadline=None, max_examples=12, derandomize=True)
TOL = {np.float64: dict(rtol=1e-9, atol=1e-9), np.float32: dict(rtol=2e-5, atol=2e-5)}
small = st.integers(1, 4)


def ours(fn, arrays, grad, **kw):
    """Output and input gradients of one of our ops (None inputs passed through)."""
    ts = [Tensor(a.copy(), requires_grad=True) if a is not None else None for a in arrays]
    out = fn(*ts, **kw)
    out.backward(grad.copy())
    return out.detach().numpy(), [t.grad if t is not None else None for t in ts]


def theirs(fn, arrays, grad, **kw):
    ts = [torch.tensor(a, requires_grad=True) if a is not None else None for a in arrays]
    out = fn(*ts, **kw)
    out.backward(torch.tensor(grad))
    return out.detach().numpy(), [t.grad.numpy() if t is not None else None for t in ts]


def assert_same(a, b, tol):
    np.testing.assert_allclose(a[0], b[0], **tol)
    for ga, gb in zip(a[1], b[1]):
        if ga is not None or gb is not None:
            np.testing.assert_allclose(ga, gb, **tol)


def case(name, rng, dtype, lead, n):
    """(arrays, grad, fused, composed, torch_fn, kwargs) for op ``name``."""
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    if name == "linear":
        x, w, b = r(*lead, n), r(n + 1, n), r(n + 1)
        return [x, w, b], r(*lead, n + 1), F.linear, F.composed_linear, TF.linear, {}
    if name == "linear_nobias":
        x, w = r(*lead, n), r(n + 1, n)
        return [x, w], r(*lead, n + 1), F.linear, F.composed_linear, TF.linear, {}
    if name in ("softmax", "log_softmax"):
        x = 4 * r(*lead, n)
        fused, comp, tfn = ((F.softmax, F.composed_softmax, torch.softmax) if name == "softmax"
                            else (F.log_softmax, F.composed_log_softmax, torch.log_softmax))
        return [x], r(*lead, n), fused, comp, tfn, {"dim": -1}
    if name == "layer_norm":
        x, w, b = 2 * r(*lead, n + 1) + 1, r(n + 1), r(n + 1)
        return ([x, w, b], r(*lead, n + 1), lambda a, ww, bb: F.layer_norm(a, (n + 1,), ww, bb),
                lambda a, ww, bb: F.composed_layer_norm(a, [n + 1], ww, bb),
                lambda a, ww, bb: TF.layer_norm(a, (n + 1,), ww, bb), {})
    if name == "layer_norm_plain":
        x = 2 * r(*lead, n + 1)
        return ([x], r(*lead, n + 1), lambda a: F.layer_norm(a, n + 1),
                lambda a: F.composed_layer_norm(a, n + 1), lambda a: TF.layer_norm(a, (n + 1,)), {})
    if name == "gelu_tanh":
        x = 3 * r(*lead, n)
        return [x], r(*lead, n), F.gelu, F.composed_gelu, TF.gelu, {"approximate": "tanh"}
    if name in ("sdpa", "sdpa_causal"):
        q, k, v = r(*lead, n, 3), r(*lead, n + 1, 3), r(*lead, n + 1, 2)
        kw = {"is_causal": name == "sdpa_causal"}
        return ([q, k, v], r(*lead, n, 2), F.scaled_dot_product_attention,
                F.composed_scaled_dot_product_attention, TF.scaled_dot_product_attention, kw)
    raise KeyError(name)


OPS = ["linear", "linear_nobias", "softmax", "log_softmax", "layer_norm", "layer_norm_plain",
       "gelu_tanh", "sdpa", "sdpa_causal"]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(lead=st.lists(small, min_size=1, max_size=2), n=small, seed=st.integers(0, 2**16))
def test_fused_equals_composed_equals_torch(name, dtype, lead, n, seed):
    rng = np.random.default_rng(seed)
    arrays, grad, fused, composed, tfn, kw = case(name, rng, dtype, lead, n)
    a = ours(fused, arrays, grad, **kw)
    assert a[0].dtype == dtype and all(g is None or g.dtype == dtype for g in a[1])
    assert_same(a, ours(composed, arrays, grad, **kw), TOL[dtype])
    assert_same(a, theirs(tfn, arrays, grad, **kw), TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(lead=st.lists(small, min_size=1, max_size=2), n_classes=st.integers(2, 7),
       reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.2]),
       seed=st.integers(0, 2**16))
def test_cross_entropy_fused_equals_composed_equals_torch(dtype, lead, n_classes, reduction,
                                                          smoothing, seed):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((*lead, n_classes))).astype(dtype)
    t = rng.integers(0, n_classes, size=lead)
    t = np.where(rng.random(lead) < 0.25, -100, t)
    t.reshape(-1)[0] = n_classes - 1  # one valid target at least
    grad = np.asarray(rng.standard_normal(lead if reduction == "none" else ()), dtype=dtype)
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    a = ours(lambda z, **k: F.cross_entropy(z, t, **k), [x], grad, **kw)
    b = ours(lambda z, **k: F.composed_cross_entropy(z, t, **k), [x], grad, **kw)
    c = theirs(lambda z, **k: TF.cross_entropy(z.reshape(-1, n_classes),
                                               torch.tensor(t.reshape(-1)), **k).reshape(
                                                   grad.shape), [x], grad, **kw)
    assert_same(a, b, TOL[dtype])
    assert_same(a, c, TOL[dtype])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch_in_both_forms(approximate):
    x = np.linspace(-8, 8, 101)
    g = np.cos(x)
    assert_same(ours(F.gelu, [x], g, approximate=approximate),
                theirs(TF.gelu, [x], g, approximate=approximate), TOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_ops_are_finite_at_extreme_logits(dtype):
    x = np.array([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, 1e4]], dtype=dtype)
    t = np.array([1, 3])
    for fn in (F.cross_entropy, F.composed_cross_entropy):
        loss, (g,) = ours(lambda z, fn=fn: fn(z, t), [x], np.array(1.0, dtype))
        assert np.isfinite(loss) and np.all(np.isfinite(g))
        np.testing.assert_allclose(loss, (2e4 + np.log(2.0) + 0.0) / 2, rtol=1e-6)
    for fn in (F.softmax, F.log_softmax):
        y, (g,) = ours(fn, [x], np.ones_like(x), dim=-1)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    q = np.full((1, 3, 2), 100.0, dtype)  # scores (100·100·2)/√2 ≈ 1.4e4
    out, grads = ours(F.scaled_dot_product_attention, [q, q.copy(), q.copy()], np.ones_like(q))
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(g)) for g in grads)


def test_attention_masks_match_torch():
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((2, 3, 4, 5)) for _ in range(4))
    bool_mask = rng.random((4, 4)) < 0.6
    bool_mask[:, 0] = True  # every query sees a key: a fully masked row is NaN in torch too
    float_mask = rng.standard_normal((2, 1, 4, 4))
    for m in (bool_mask, float_mask):
        assert_same(ours(F.scaled_dot_product_attention, [q, k, v], g, attn_mask=m, scale=0.3),
                    theirs(TF.scaled_dot_product_attention, [q, k, v], g,
                           attn_mask=torch.tensor(m), scale=0.3), TOL[np.float64])
    with pytest.raises(ValueError):
        F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), dropout_p=0.5)


def test_attention_dropout_keeps_expectation():
    rng = np.random.default_rng(1)
    q, k, v = (Tensor(rng.standard_normal((1, 4, 3))) for _ in range(3))
    plain = F.scaled_dot_product_attention(q, k, v).numpy()
    drops = [F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, rng=rng).numpy()
             for _ in range(4000)]
    assert not np.allclose(drops[0], plain)
    # E[mask/(1-p)] = 1: the Monte Carlo mean is within 5 standard errors of the plain output
    se = np.std(drops, axis=0) / np.sqrt(len(drops))
    assert np.all(np.abs(np.mean(drops, axis=0) - plain) < 5 * se + 1e-12)


def test_gradients_accumulate_across_uses():
    """Using one tensor twice must sum both contributions (the 'forgot to accumulate' bug)."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    F.linear(F.linear(xt, wt), wt).sum().backward()
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    TF.linear(TF.linear(tx, tw), tw).sum().backward()
    np.testing.assert_allclose(wt.grad, tw.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-12)


def test_residual_gradient_is_identity_plus_branch():
    rng = np.random.default_rng(3)
    x, w, g = rng.standard_normal((2, 5)), rng.standard_normal((5, 5)), rng.standard_normal((2, 5))
    a = ours(lambda z, ww: F.residual(z, lambda h: F.gelu(F.linear(h, ww))), [x, w], g)
    b = theirs(lambda z, ww: z + TF.gelu(TF.linear(z, ww)), [x, w], g)
    assert_same(a, b, TOL[np.float64])


def test_cross_entropy_ignores_positions_and_matches_mean_over_valid():
    logits = Tensor(np.zeros((2, 3, 4)), requires_grad=True)
    t = np.array([[1, -100, 2], [-100, -100, 0]])
    loss = F.cross_entropy(logits, t)
    loss.backward()
    assert np.isclose(loss.item(), np.log(4.0))
    assert np.all(logits.grad[t == -100] == 0.0)
    assert np.allclose(logits.grad[t != -100].sum(-1), 0.0)  # rows of p − y sum to zero


@pytest.mark.parametrize("fn", [F.cross_entropy, F.composed_cross_entropy])
def test_cross_entropy_rejects_out_of_range_targets_like_torch(fn):
    """Regression: target -1 (a common padding value) silently scored class C - 1."""
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    for bad, first in (([-1, 0], -1), ([0, 3], 3), ([-5, -100], -5)):
        with pytest.raises(IndexError):  # torch's verdict on the same input
            TF.cross_entropy(torch.tensor(x), torch.tensor(bad))
        with pytest.raises(IndexError, match=f"target {first} is out of bounds for 3 classes"):
            fn(Tensor(x), np.array(bad))
    with pytest.raises(IndexError, match="pass ignore_index=-1"):
        fn(Tensor(x), np.array([-1, 0]))
    # ... and -1 used as the ignore_index is skipped, as in torch
    ours = fn(Tensor(x), np.array([-1, 0]), ignore_index=-1).item()
    theirs = TF.cross_entropy(torch.tensor(x), torch.tensor([-1, 0]), ignore_index=-1).item()
    assert ours == pytest.approx(theirs, rel=1e-12)
    with pytest.raises(TypeError, match="integer class ids"):
        fn(Tensor(x), np.array([0.0, 1.0]))


def test_docstring_examples():
    assert doctest.testmod(F, extraglobs={"np": np, "Tensor": Tensor}).failed == 0


@pytest.mark.parametrize("name", OPS + ["cross_entropy", "gelu_exact"])
def test_fused_ops_pass_gradcheck(name):
    """The fused Functions against the engine's own central-difference gradcheck (float64)."""
    from spiral.autograd import gradcheck

    rng = np.random.default_rng(4)
    if name == "cross_entropy":
        t = np.array([[0, 2, -100], [1, 1, 3]])
        fn, arrays = (lambda z: F.cross_entropy(z, t, label_smoothing=0.1)), [
            rng.standard_normal((2, 3, 4))]
    elif name == "gelu_exact":
        fn, arrays = F.gelu, [rng.standard_normal((3, 4)) * 2]
    else:
        arrays, _, fn, _, _, kw = case(name, rng, np.float64, [2], 3)
        fn = (lambda f, k: lambda *a: f(*a, **k))(fn, kw)
    assert gradcheck(fn, [Tensor(a, requires_grad=True) for a in arrays], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("affine", ["weight", "bias"])
def test_layer_norm_with_only_weight_or_only_bias_matches_torch(affine):
    rng = np.random.default_rng(5)
    x, p, g = rng.standard_normal((3, 2, 6)), rng.standard_normal((2, 6)), rng.standard_normal(
        (3, 2, 6))
    def mine(a, q):
        return F.layer_norm(a, (2, 6), **{affine: q})

    def ref(a, q):
        return TF.layer_norm(a, (2, 6), **{affine: q})

    assert_same(ours(mine, [x, p], g), theirs(ref, [x, p], g), TOL[np.float64])


def test_cross_entropy_with_every_target_ignored_is_nan_like_torch():
    x = np.zeros((2, 3))
    t = np.array([-100, -100])
    ours_loss = F.cross_entropy(Tensor(x), t).item()
    torch_loss = TF.cross_entropy(torch.tensor(x), torch.tensor(t)).item()
    assert np.isnan(ours_loss) and np.isnan(torch_loss)
    assert F.cross_entropy(Tensor(x), t, reduction="sum").item() == 0.0
