"""The transport: torch.distributed process groups, NumPy views, and byte counting.

We do not write a transport. Processes talk through ``torch.distributed`` (gloo on CPU,
NCCL on GPUs); our arrays cross the process boundary as ``torch.from_numpy`` views, which
share the NumPy buffer (no copy: the data pointers are equal, see
``tests/distributed/test_runtime.py``). Every point-to-point message and collective goes
through a :class:`Comm`, which counts the bytes this rank hands to the network, so the
chapter's volume formulas (ring all-reduce: 2(N−1)/N of the buffer per rank) are checked
by counting, not assumed.

torch is an optional extra (``pip install -e ".[distributed]"``) imported lazily here and
nowhere else at module level: ``import spiral.distributed`` works without it, and the
first call that needs it raises one clear ImportError.
Chapter: stage 13 (distributed training).
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

INSTALL_HINT = ('spiral.distributed needs PyTorch as its transport: '
                'pip install -e ".[distributed]" (torch==2.13.0)')


def require_torch() -> Any:
    """Import torch, or raise an ImportError that says what to install."""
    try:
        import torch
        import torch.distributed
    except ImportError as e:  # pragma: no cover - exercised in a torch-less subprocess
        raise ImportError(INSTALL_HINT) from e
    return torch


def as_torch(array: np.ndarray) -> Any:
    """A torch tensor sharing ``array``'s memory (``torch.from_numpy``; never a copy)."""
    torch = require_torch()
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise ValueError("as_torch needs a C-contiguous NumPy array (a view is sent in place)")
    return torch.from_numpy(array)


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_process_group(rank: int, world_size: int, port: int, timeout_s: float = 60.0,
                       backend: str = "gloo") -> None:
    """Join the job at tcp://127.0.0.1:port; collectives fail after ``timeout_s``."""
    torch = require_torch()
    torch.distributed.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
        timeout=timedelta(seconds=timeout_s))


def init_from_env(timeout_s: float = 60.0, backend: str = "gloo") -> None:
    """Join a job started by ``torchrun`` (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    torch = require_torch()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise RuntimeError(f"not started by torchrun: environment lacks {', '.join(missing)}")
    torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_s))


class Comm:
    """This rank's view of one process group, with a byte counter per operation.

    ``ranks`` are the group's members as global ranks (``None``: the whole world);
    ``rank`` and ``size`` are positions inside the group, and ``send``/``recv`` take group
    positions. ``sent[op]`` adds up the bytes this rank put on the wire for ``op``.
    """

    def __init__(self, ranks: Sequence[int] | None = None) -> None:
        torch = require_torch()
        dist = torch.distributed
        self.dist = dist
        world = dist.get_world_size()
        self.ranks = list(range(world)) if ranks is None else list(ranks)
        self.group = None if ranks is None or len(self.ranks) == world else dist.new_group(
            self.ranks)
        me = dist.get_rank()
        self.rank = self.ranks.index(me) if me in self.ranks else -1
        self.size = len(self.ranks)
        self.sent: dict[str, int] = defaultdict(int)

    def count(self, op: str, nbytes: int) -> None:
        self.sent[op] += int(nbytes)

    def total_sent(self) -> int:
        return sum(self.sent.values())

    # point to point (group positions) ------------------------------------------------
    def isend(self, array: np.ndarray, dst: int, op: str = "p2p") -> Any:
        self.count(op, array.nbytes)
        return self.dist.isend(as_torch(array), dst=self.ranks[dst], group=self.group)

    def irecv(self, array: np.ndarray, src: int) -> Any:
        return self.dist.irecv(as_torch(array), src=self.ranks[src], group=self.group)

    def send(self, array: np.ndarray, dst: int, op: str = "p2p") -> None:
        self.isend(array, dst, op).wait()

    def recv(self, array: np.ndarray, src: int) -> None:
        self.irecv(array, src).wait()

    # library collectives (gloo's own algorithms); counted as the payload handed over ----
    def all_reduce(self, array: np.ndarray, op: str = "all_reduce", async_op: bool = False
                   ) -> Any:
        """In-place sum over the group with torch.distributed's own all-reduce."""
        if self.size == 1:
            return None
        self.count(op, array.nbytes)
        return self.dist.all_reduce(as_torch(array), group=self.group, async_op=async_op)

    def broadcast(self, array: np.ndarray, src: int = 0, op: str = "broadcast") -> None:
        if self.size == 1:
            return
        if self.rank == src:
            self.count(op, array.nbytes)
        self.dist.broadcast(as_torch(array), src=self.ranks[src], group=self.group)

    def barrier(self) -> None:
        self.dist.barrier(group=self.group)


def grid(dp: int, tp: int) -> tuple[Comm, Comm]:
    """DP × TP over dp·tp ranks: tensor-parallel groups are runs of ``tp`` consecutive ranks,
    data-parallel groups the ranks with the same position inside their TP group. Every
    rank creates every group (torch.distributed requires it); returns this rank's two."""
    torch = require_torch()
    world, me = torch.distributed.get_world_size(), torch.distributed.get_rank()
    if dp * tp != world:
        raise ValueError(f"dp × tp = {dp} × {tp} does not match the world size {world}")
    tps = [Comm(list(range(d * tp, (d + 1) * tp))) for d in range(dp)]
    dps = [Comm(list(range(t, world, tp))) for t in range(tp)]
    return dps[me % tp], tps[me // tp]
