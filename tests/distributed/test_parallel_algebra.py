"""Stage 13: the algebra under each strategy, checked in one process (no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.distributed.workload import TrainSpec, global_batches, loss_fn, make_model

pytestmark = pytest.mark.stage13


def _grads(model, x, y):
    model.zero_grad()
    loss_fn(model, x, y).backward()
    return {n: p.grad.copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("n_shards", [2, 4])
def test_full_batch_gradient_is_mean_of_shard_gradients(n_shards):
    spec = TrainSpec()
    model = make_model(spec)
    x, y = global_batches(spec)[0]
    full = _grads(model, x, y)
    shards = [_grads(model, xs, ys) for xs, ys in zip(np.split(x, n_shards),
                                                      np.split(y, n_shards))]
    for name, g in full.items():
        np.testing.assert_allclose(np.mean([s[name] for s in shards], axis=0), g,
                                   rtol=1e-10, atol=1e-14)
    # unequal shards: the plain mean is wrong, the size-weighted mean is right
    a, b = _grads(model, x[:2], y[:2]), _grads(model, x[2:], y[2:])
    name = "blocks.0.attn.qkv_proj.weight"
    np.testing.assert_allclose(0.25 * a[name] + 0.75 * b[name], full[name], rtol=1e-10,
                               atol=1e-14)
    assert not np.allclose(0.5 * a[name] + 0.5 * b[name], full[name], rtol=1e-6)


def test_column_and_row_parallel_products_and_their_gradients():
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((5, 8)), rng.standard_normal((6, 8))
    Ybar = rng.standard_normal((5, 6))
    N = 2
    # column-parallel: Y = [X W_1ᵀ | X W_2ᵀ]; X̄ = Σ_r Ȳ_r W_r needs a sum (all-reduce)
    Wr = np.split(W, N, axis=0)
    np.testing.assert_allclose(np.concatenate([X @ w.T for w in Wr], axis=1), X @ W.T)
    Ybr = np.split(Ybar, N, axis=1)
    np.testing.assert_allclose(sum(yb @ w for yb, w in zip(Ybr, Wr)), Ybar @ W)
    # row-parallel: Y = Σ_r X_r W_rᵀ needs a sum forward; X̄_r = Ȳ W_r is local
    Xr, Wc = np.split(X, N, axis=1), np.split(W, N, axis=1)
    np.testing.assert_allclose(sum(x @ w.T for x, w in zip(Xr, Wc)), X @ W.T)
    np.testing.assert_allclose(np.concatenate([Ybar @ w for w in Wc], axis=1), Ybar @ W)


def test_post_accumulate_grad_hook_fires_once_with_the_final_gradient():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.full(3, 2.0), requires_grad=True)
    seen = []
    handle = a.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.copy()))
    ((a * b).sum() + (a * a).sum()).backward()  # two uses of a: hook after both
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2.0 + 2 * 1.0)
    handle.remove()
    a.grad = None
    (a * b).sum().backward()
    assert len(seen) == 1
