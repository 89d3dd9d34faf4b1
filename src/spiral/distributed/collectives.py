"""All-reduce three ways, built from send/recv: naive, and the ring (reduce-scatter + all-gather).

After an all-reduce every rank holds x = Σ_r x_r. Two ways to get there over N ranks, for a
buffer of n bytes:

- **naive**: every rank sends its buffer to a root, the root adds and sends the sum back.
  The root sends (N − 1)·n bytes and receives as much: its link is the bottleneck, and the
  time grows linearly with N.
- **ring** (Patarasuk & Yuan 2009; Baidu's allreduce for deep learning, 2017): cut the buffer
  into N chunks. *Reduce-scatter*: N − 1 steps, each rank passes one chunk to its right
  neighbour and adds the chunk arriving from its left; afterwards rank r owns the full sum
  of chunk r. *All-gather*: N − 1 more steps pass the finished chunks around. Each rank
  sends 2(N − 1) chunks of n/N bytes:

      bytes sent per rank = 2 (N − 1)/N · n        (→ 2n, independent of N)

  With latency α per message and bandwidth β⁻¹ per byte, T_ring = 2(N − 1)(α + n/(Nβ)).

Reduce-scatter alone is what ZeRO's sharded gradients need, all-gather alone what its
sharded parameters need; both are exported. Every message goes through :class:`Comm`, which
counts the bytes. Chapter: stage 13 (ring all-reduce's cost).
"""

from __future__ import annotations

import numpy as np

from spiral.distributed.runtime import Comm

__all__ = ["chunk_bounds", "naive_all_reduce", "ring_reduce_scatter", "ring_all_gather",
           "ring_all_reduce"]


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [start, stop) ranges covering n items, sizes differing by ≤ 1."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    edges = [(n * i) // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _flat(buffer: np.ndarray) -> np.ndarray:
    if not buffer.flags.c_contiguous:
        raise ValueError("all-reduce works in place on a C-contiguous array")
    return buffer.reshape(-1)  # a view: results land in the caller's array


def naive_all_reduce(comm: Comm, buffer: np.ndarray, root: int = 0) -> np.ndarray:
    """Sum ``buffer`` over the group in place: gather to ``root``, add, send back."""
    x = _flat(buffer)
    if comm.size == 1:
        return buffer
    if comm.rank == root:
        incoming = np.empty_like(x)
        for src in range(comm.size):
            if src != root:
                comm.recv(incoming, src)
                x += incoming
        handles = [comm.isend(x, dst, op="naive") for dst in range(comm.size) if dst != root]
        for h in handles:
            h.wait()
    else:
        comm.send(x, root, op="naive")
        comm.recv(x, root)
    return buffer


def ring_reduce_scatter(comm: Comm, buffer: np.ndarray, op: str = "reduce_scatter",
                        bounds: list[tuple[int, int]] | None = None) -> tuple[int, int]:
    """After this, chunk ``comm.rank`` of ``buffer`` holds the group's sum; returns its range.

    ``bounds`` gives the N chunks' [start, stop) (default: :func:`chunk_bounds`).

    Step s (0..N−2): send chunk (r − s − 1) mod N right, add the chunk (r − s − 2) mod N
    arriving from the left. The last chunk received, at s = N − 2, is chunk r.
    """
    x = _flat(buffer)
    N, r = comm.size, comm.rank
    bounds = bounds or chunk_bounds(x.size, N)
    if N == 1:
        return bounds[0]
    right, left = (r + 1) % N, (r - 1) % N
    scratch = np.empty(max(b - a for a, b in bounds), dtype=x.dtype)
    for s in range(N - 1):
        a, b = bounds[(r - s - 1) % N]
        c, d = bounds[(r - s - 2) % N]
        handle = comm.isend(x[a:b], right, op=op)
        comm.recv(scratch[:d - c], left)
        handle.wait()
        x[c:d] += scratch[:d - c]
    return bounds[r]


def ring_all_gather(comm: Comm, buffer: np.ndarray, op: str = "all_gather",
                    bounds: list[tuple[int, int]] | None = None) -> np.ndarray:
    """Each rank holds chunk ``comm.rank`` of ``buffer``; afterwards every rank holds all.

    Step s (0..N−2): send chunk (r − s) mod N right, receive chunk (r − s − 1) mod N.
    """
    x = _flat(buffer)
    N, r = comm.size, comm.rank
    if N == 1:
        return buffer
    bounds = bounds or chunk_bounds(x.size, N)
    right, left = (r + 1) % N, (r - 1) % N
    for s in range(N - 1):
        a, b = bounds[(r - s) % N]
        c, d = bounds[(r - s - 1) % N]
        handle = comm.isend(x[a:b], right, op=op)
        comm.recv(x[c:d], left)
        handle.wait()
    return buffer


def ring_all_reduce(comm: Comm, buffer: np.ndarray) -> np.ndarray:
    """Sum ``buffer`` over the group in place: ring reduce-scatter, then ring all-gather."""
    ring_reduce_scatter(comm, buffer, op="ring")
    ring_all_gather(comm, buffer, op="ring")
    return buffer
