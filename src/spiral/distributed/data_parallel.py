"""Data parallelism with PyTorch DDP's semantics: replicate, split the batch, average gradients.

Every rank holds the whole model. At construction rank 0's weights are broadcast, so all
replicas start equal; each step every rank runs forward and backward on its own B/N rows,
and the gradients are averaged,

    g = (1/N) Σ_r g_r,   g_r = ∇ (mean loss over rank r's rows),

which is the full-batch gradient (the mean of shard means when the shards are equal), so
the identical optimizer step keeps the replicas identical. Three ways to average:

- ``"naive"`` / ``"ring"``: after backward, flatten every gradient into one buffer and run
  :func:`~spiral.distributed.collectives.naive_all_reduce` or ``ring_all_reduce``.
- ``"bucketed"`` (DDP's way; Li et al. 2020, "PyTorch Distributed"): parameters are packed,
  in reverse order of registration (roughly the order backward produces their gradients),
  into buckets of ``bucket_cap_bytes``. A post-accumulate-grad hook copies each finished
  gradient into its bucket; when a bucket is full its all-reduce starts asynchronously,
  while backward goes on computing earlier layers' gradients. ``finish_gradient_
  synchronization()`` waits for what is still in flight: only that part is exposed.

Chapter: stage 13 (data parallelism; the full-batch gradient as the mean of shard gradients).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from spiral.distributed.collectives import naive_all_reduce, ring_all_reduce
from spiral.distributed.runtime import Comm
from spiral.nn.module import Module

__all__ = ["DistributedDataParallel", "ALGORITHMS"]

ALGORITHMS = ("naive", "ring", "bucketed")


class _Bucket:
    def __init__(self, params: list[Any], dtype: Any) -> None:
        self.params = params
        self.offsets: dict[int, tuple[int, int]] = {}
        n = 0
        for p in params:
            self.offsets[id(p)] = (n, n + p.data.size)
            n += p.data.size
        self.buffer = np.zeros(n, dtype=dtype)
        self.ready: set[int] = set()
        self.work: Any = None


class DistributedDataParallel(Module):
    """Wrap ``module`` for data parallelism over ``comm``; call it as the module itself."""

    def __init__(self, module: Module, comm: Comm, *, algorithm: str = "bucketed",
                 bucket_cap_bytes: int = 25 * 2**20, broadcast_buffers: bool = True) -> None:
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.module, self.comm, self.algorithm = module, comm, algorithm
        self.params = [p for p in module.parameters() if p.requires_grad]
        if broadcast_buffers:
            for p in self.params:  # every replica starts from rank 0's weights
                comm.broadcast(p.data, src=0)
        self.buckets: list[_Bucket] = []
        self.exposed_s = 0.0  # wall time spent waiting for communication after backward
        self._handles: list[Any] = []
        if algorithm == "bucketed":
            self._build_buckets(bucket_cap_bytes)

    def _build_buckets(self, cap: int) -> None:
        current: list[Any] = []
        size = 0
        for p in reversed(self.params):
            current.append(p)
            size += p.data.nbytes
            if size >= cap:
                self.buckets.append(_Bucket(current, p.data.dtype))
                current, size = [], 0
        if current:
            self.buckets.append(_Bucket(current, current[0].data.dtype))
        owner = {id(p): b for b in self.buckets for p in b.params}
        for p in self.params:
            bucket = owner[id(p)]
            self._handles.append(p.register_post_accumulate_grad_hook(
                lambda t, b=bucket: self._on_grad(t, b)))

    def _on_grad(self, p: Any, bucket: _Bucket) -> None:
        a, b = bucket.offsets[id(p)]
        bucket.buffer[a:b] = p.grad.reshape(-1)
        bucket.ready.add(id(p))
        if len(bucket.ready) == len(bucket.params):
            bucket.work = self.comm.all_reduce(bucket.buffer, op="bucketed", async_op=True)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def finish_gradient_synchronization(self) -> None:
        """Make every ``p.grad`` the average over ranks (call after ``loss.backward()``)."""
        t0 = time.perf_counter()
        N = self.comm.size
        if self.algorithm == "bucketed":
            for bucket in self.buckets:
                if bucket.work is None and len(bucket.ready) < len(bucket.params):
                    # a parameter got no gradient this step: it contributes zeros
                    for p in bucket.params:
                        if id(p) not in bucket.ready:
                            a, b = bucket.offsets[id(p)]
                            bucket.buffer[a:b] = 0.0
                    bucket.work = self.comm.all_reduce(bucket.buffer, op="bucketed",
                                                       async_op=True)
                if bucket.work is not None:
                    bucket.work.wait()
                bucket.buffer /= N
                for p in bucket.params:  # gradients become views of the bucket (no copy)
                    a, b = bucket.offsets[id(p)]
                    p.grad = bucket.buffer[a:b].reshape(p.data.shape)
                bucket.ready.clear()
                bucket.work = None
        else:
            grads = [p.grad if p.grad is not None else np.zeros_like(p.data)
                     for p in self.params]
            flat = np.concatenate([g.reshape(-1) for g in grads])
            (ring_all_reduce if self.algorithm == "ring" else naive_all_reduce)(self.comm, flat)
            flat /= N
            n = 0
            for p in self.params:
                p.grad = flat[n:n + p.data.size].reshape(p.data.shape).copy()
                n += p.data.size
        self.exposed_s += time.perf_counter() - t0
