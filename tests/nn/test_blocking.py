"""Cache-blocked kernels compute exactly what one whole-array pass computes."""

from __future__ import annotations

import numpy as np
import pytest

from spiral.autograd import Tensor
from spiral.nn import kernels as K
from spiral.nn.blocking import WHOLE, batch_blocks, flat_blocks, pick
from spiral.nn.layers import Dropout

pytestmark = pytest.mark.stage3


def test_flat_blocks_cover_every_index_once_in_order() -> None:
    n = WHOLE + 12345
    idx = np.concatenate([np.arange(n)[b] for b in flat_blocks(n, 1000)])
    assert np.array_equal(idx, np.arange(n))
    assert list(flat_blocks(10)) == [slice(0, 10)]  # small arrays run whole
    with pytest.raises(ValueError, match="block"):
        list(flat_blocks(10, 0))


@pytest.mark.parametrize("lead,per_item,block", [((7, 5), WHOLE // 4, WHOLE // 3),
                                                  ((3, 4, 5), WHOLE // 8, 2 * WHOLE // 8),
                                                  ((2, 3), WHOLE // 2, 1)])
def test_batch_blocks_cover_the_batch_once_in_c_order(lead: tuple[int, ...], per_item: int,
                                                      block: int) -> None:
    ids = np.arange(int(np.prod(lead))).reshape(lead)
    seen = np.concatenate([np.atleast_1d(ids[i]).reshape(-1)
                           for i in batch_blocks(lead, per_item, block)])
    assert np.array_equal(seen, np.arange(ids.size))


def test_pick_shares_broadcast_axes() -> None:
    a = np.arange(2 * 1 * 4 * 5).reshape(2, 1, 4, 5)
    assert np.array_equal(pick(a, (1, slice(0, 3)), n_lead=2), a[1, 0:1])
    assert pick(np.ones((4, 5)), (1, 2), n_lead=2).shape == (4, 5)  # no batch axes: shared
    assert pick(None, (0,), n_lead=1) is None


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_gelu_is_bit_identical_to_one_pass(approximate: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    x: np.ndarray = (3 * rng.standard_normal((3, WHOLE // 2 + 7))).astype(dtype)  # blocked
    g: np.ndarray = rng.standard_normal(x.shape).astype(dtype)
    y, aux = K.gelu_forward(x, approximate)
    y1, aux1 = K.gelu_forward_block(x, approximate)
    assert np.array_equal(y, y1) and np.array_equal(aux, aux1)
    assert np.array_equal(K.gelu_backward(g, x, aux, approximate),
                          K.gelu_backward_block(g, x, aux, approximate))


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
@pytest.mark.parametrize("shapes", [
    ((4, 6, 256, 16), (4, 6, 256, 16), (4, 6, 256, 8)),          # MHA
    ((3, 2, 4, 256, 16), (3, 2, 1, 256, 16), (3, 2, 1, 256, 8)),  # GQA: k, v broadcast
])
def test_blocked_attention_forward_is_bit_identical_to_one_pass(
        dropout_p: float, shapes: tuple[tuple[int, ...], ...]) -> None:
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    mask = K.causal_mask(256, 256)
    assert batch_blocks(np.broadcast_shapes(q.shape[:-2], k.shape[:-2]), 256 * 256,
                        K.ATTENTION_BLOCK) != [()]  # the test exercises the blocked path
    got = K.attention_forward(q, k, v, mask, 0.25, dropout_p, np.random.default_rng(5))
    want = K.attention_forward_block(q, k, v, mask, 0.25, dropout_p, np.random.default_rng(5))
    for a, b in zip(got, want):
        assert (a is None and b is None) or (a is not None and b is not None
                                             and np.array_equal(a, b))


def test_dropout_draws_the_mask_of_one_whole_draw() -> None:
    x = Tensor(np.ones((3, WHOLE // 2 + 5), dtype=np.float32))
    y = Dropout(0.2, rng=np.random.default_rng(7))(x).numpy()
    keep = np.random.default_rng(7).random(x.shape) >= 0.2
    assert np.array_equal(y, np.float32(1) * (keep.astype(np.float32) / (1.0 - 0.2)))
