"""Stage 13: every all-reduce equals torch.distributed's, and sends the bytes its formula says."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from spiral.distributed import collectives as C  # noqa: E402
from spiral.distributed.runtime import Comm, as_torch  # noqa: E402
from spiral.distributed.spawn import spawn  # noqa: E402

pytestmark = pytest.mark.stage13


def _collectives(rank: int, world: int, n: int) -> dict:
    import torch.distributed as dist

    x = np.random.default_rng(rank).standard_normal(n)
    reference = x.copy()
    dist.all_reduce(as_torch(reference))
    out: dict = {"reference": reference}
    for name, fn in (("ring", C.ring_all_reduce), ("naive", C.naive_all_reduce)):
        comm = Comm()
        y = x.copy()
        fn(comm, y)
        out[name] = y
        out[f"sent_{name}"] = comm.total_sent()
    comm = Comm()
    y = x.copy()
    lo, hi = C.ring_reduce_scatter(comm, y)
    out["scattered"] = y[lo:hi].copy()
    out["bounds"] = [lo, hi]
    z = np.zeros(n)
    z[lo:hi] = reference[lo:hi]
    C.ring_all_gather(comm, z)
    out["gathered"] = z
    out["sent_rs_ag"] = comm.total_sent()
    return out


@pytest.mark.parametrize("world", [2, 4])
def test_ring_and_naive_equal_dist_all_reduce_and_count_their_bytes(world):
    n = 1000 * world  # divisible by N: the formula is exact
    ranks = spawn(_collectives, world, n, timeout_s=60)
    nbytes = n * 8
    for r, out in enumerate(ranks):
        np.testing.assert_allclose(out["ring"], out["reference"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["naive"], out["reference"], rtol=1e-12, atol=1e-12)
        # ring: 2(N-1)/N of the buffer per rank, counted message by message
        assert out["sent_ring"] == 2 * (world - 1) * nbytes // world
        # naive: the root sends N-1 buffers, everyone else one
        assert out["sent_naive"] == (nbytes * (world - 1) if r == 0 else nbytes)
        lo, hi = out["bounds"]
        np.testing.assert_allclose(out["scattered"], out["reference"][lo:hi], rtol=1e-12)
        np.testing.assert_allclose(out["gathered"], out["reference"], rtol=1e-12)
        assert out["sent_rs_ag"] == out["sent_ring"]


def test_ring_handles_sizes_not_divisible_by_n():
    ranks = spawn(_collectives, 3, 10, timeout_s=60)
    for out in ranks:
        np.testing.assert_allclose(out["ring"], out["reference"], rtol=1e-12)
        assert out["sent_ring"] <= 2 * 2 * 8 * 4  # at most 2(N-1) chunks of ceil(10/3)


def test_chunk_bounds_cover_and_balance():
    for n in range(0, 30):
        for parts in range(1, 6):
            b = C.chunk_bounds(n, parts)
            assert b[0][0] == 0 and b[-1][1] == n
            assert all(b[i][1] == b[i + 1][0] for i in range(parts - 1))
            sizes = [hi - lo for lo, hi in b]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="parts"):
        C.chunk_bounds(3, 0)


def test_as_torch_is_a_view_not_a_copy():
    x = np.arange(12.0)
    t = as_torch(x)
    assert t.data_ptr() == x.ctypes.data  # the same memory
    t += 1
    assert x[0] == 1.0
    with pytest.raises(ValueError, match="C-contiguous"):
        as_torch(np.arange(12.0).reshape(3, 4).T)
