"""Stage 13: a crashed or hung rank ends the job with a clear error within the timeout."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("torch")

from spiral.distributed.runtime import Comm  # noqa: E402
from spiral.distributed.spawn import WorkerError, spawn  # noqa: E402

pytestmark = pytest.mark.stage13


def _killed(rank: int, world: int) -> dict:
    comm = Comm()
    x = np.ones(4)
    for step in range(100):
        if rank == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        comm.all_reduce(x)
    return {}


def _hung(rank: int, world: int) -> dict:
    comm = Comm()
    if rank == 1:
        time.sleep(3600)
    comm.all_reduce(np.ones(4))
    return {}


def _raises(rank: int, world: int) -> dict:
    if rank == 0:
        raise ValueError("bad shard")
    Comm().all_reduce(np.ones(4))
    return {}


def test_killed_rank_is_named_within_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"rank 1 was killed by SIGKILL"):
        spawn(_killed, 3, timeout_s=30, collective_timeout_s=5)
    assert time.monotonic() - t0 < 30


def test_hung_rank_times_out_with_a_clear_error():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"rank 0 exited with code 1 .*|did not finish"):
        spawn(_hung, 2, timeout_s=30, collective_timeout_s=2)
    assert time.monotonic() - t0 < 30


def test_parent_deadline_stops_a_job_that_never_ends():
    with pytest.raises(WorkerError, match=r"did not finish within 2 s"):
        spawn(_hung, 2, timeout_s=2, collective_timeout_s=60)


def test_exception_in_a_rank_is_reported_with_its_message():
    with pytest.raises(WorkerError, match=r"rank 0 exited with code 1 \(ValueError: bad shard\)"):
        spawn(_raises, 2, timeout_s=30, collective_timeout_s=5)
