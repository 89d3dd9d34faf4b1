"""The paged KV cache: fixed-size blocks, a block table per sequence, a free list.

A contiguous cache reserves context_length positions per sequence up front, so a request
that stops early wastes the rest. Paging (Kwon et al., 2023, vLLM's PagedAttention) cuts
the pool into blocks of ``block_size`` positions; sequence s owns a block table
[b_0, b_1, ...] and position t lives in block b_{t // block_size} at slot t % block_size:

    K_s[t] = pool_K[table_s[t // block_size], :, t % block_size]

so at most block_size − 1 slots per sequence are ever wasted. Blocks carry reference
counts: :meth:`PagedKVCache.fork` lets a child share its parent's blocks (a common prompt
prefix is stored once), and writing into a shared block first copies it (copy-on-write).
Attention here gathers a sequence's blocks into one (1, Hkv, t, hd) array per layer, so
paged logits are bit-identical to the contiguous cache's. Chapter: stage 17 (inference).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["OutOfBlocks", "PagedKVCache", "PagedSequence"]


class OutOfBlocks(MemoryError):
    """The pool has no free block left (a scheduler preempts or waits on this)."""


class PagedKVCache:
    """A pool of ``num_blocks`` blocks (per layer, K and V of shape (Hkv, block_size, hd)).

    >>> c = PagedKVCache(n_layers=1, n_kv_heads=1, head_dim=2, num_blocks=4, block_size=2)
    >>> s = c.sequence(0); s.reserve(3); s.advance(3)
    >>> c.tables[0], c.num_free
    ([0, 1], 2)
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int,
                 block_size: int = 16, dtype: Any = np.float32) -> None:
        if min(n_layers, n_kv_heads, head_dim, num_blocks, block_size) < 1:
            raise ValueError("PagedKVCache sizes must all be positive")
        shape = (num_blocks, n_kv_heads, block_size, head_dim)
        self.keys = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.block_size, self.num_blocks = block_size, num_blocks
        self.free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives block 0 first
        self.refcount = np.zeros(num_blocks, dtype=np.int64)
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    @classmethod
    def for_model(cls, model: Any, num_blocks: int, block_size: int = 16) -> PagedKVCache:
        c = model.config
        return cls(c.n_layers, c.kv_heads, c.head_dim, num_blocks, block_size,
                   model.tok_emb.weight.data.dtype)

    @property
    def num_free(self) -> int:
        return len(self.free)

    def sequence(self, seq_id: int) -> PagedSequence:
        """The cache view of sequence ``seq_id`` (created empty on first use)."""
        if seq_id not in self.tables:
            self.tables[seq_id], self.lengths[seq_id] = [], 0
        return PagedSequence(self, seq_id)

    def _alloc(self) -> int:
        if not self.free:
            raise OutOfBlocks(f"all {self.num_blocks} blocks of {self.block_size} positions "
                              f"are in use")
        b = self.free.pop()
        self.refcount[b] = 1
        return b

    def _release(self, b: int) -> None:
        self.refcount[b] -= 1
        if self.refcount[b] == 0:
            self.free.append(b)

    def blocks_needed(self, seq_id: int, n: int) -> int:
        """New blocks that n more tokens of ``seq_id`` take (copy-on-write included)."""
        t, table, bs = self.lengths.get(seq_id, 0), self.tables.get(seq_id, []), self.block_size
        new = -(-(t + n) // bs) - len(table)
        cow = int(n > 0 and t % bs != 0 and self.refcount[table[-1]] > 1)
        return new + cow

    def reserve(self, seq_id: int, n: int) -> None:
        """Make room for n more positions: copy a shared partly filled last block, then
        append fresh blocks. All or nothing: raises :class:`OutOfBlocks` before changing."""
        need = self.blocks_needed(seq_id, n)
        if need > self.num_free:
            raise OutOfBlocks(f"sequence {seq_id} needs {need} blocks, {self.num_free} are free")
        table, t = self.tables[seq_id], self.lengths[seq_id]
        if n > 0 and t % self.block_size and self.refcount[table[-1]] > 1:
            old, new = table[-1], self._alloc()  # copy-on-write
            for pool in (*self.keys, *self.values):
                pool[new] = pool[old]
            self._release(old)
            table[-1] = new
        while len(table) * self.block_size < t + n:
            table.append(self._alloc())

    def write(self, seq_id: int, layer: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store k, v (Hkv, n, hd) at positions length .. length + n − 1 (reserved)."""
        t, bs, table = self.lengths[seq_id], self.block_size, self.tables[seq_id]
        for i in range(k.shape[-2]):
            b, slot = table[(t + i) // bs], (t + i) % bs
            if self.refcount[b] != 1:
                raise RuntimeError(f"block {b} is shared; reserve() must copy it first")
            self.keys[layer][b, :, slot] = k[:, i]
            self.values[layer][b, :, slot] = v[:, i]

    def gather(self, seq_id: int, layer: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions 0 .. n − 1 of one layer as contiguous (1, Hkv, n, hd) keys and values."""
        nb = -(-n // self.block_size)
        idx = np.asarray(self.tables[seq_id][:nb], dtype=np.int64)

        def cat(pool: np.ndarray) -> np.ndarray:  # (nb, Hkv, bs, hd) -> (Hkv, nb·bs, hd)
            blocks = pool[idx].transpose(1, 0, 2, 3)
            return blocks.reshape(blocks.shape[0], -1, blocks.shape[-1])[None, :, :n]

        return cat(self.keys[layer]), cat(self.values[layer])

    def fork(self, parent: int, child: int) -> PagedSequence:
        """A new sequence sharing every block of ``parent`` (the prefix is stored once)."""
        if parent not in self.tables:
            raise ValueError(f"no sequence {parent} to fork")
        if child in self.tables:
            raise ValueError(f"sequence {child} already exists")
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        for b in self.tables[child]:
            self.refcount[b] += 1
        return PagedSequence(self, child)

    def fork_prefix(self, parent: int, child: int, n_tokens: int) -> PagedSequence:
        """A new sequence sharing the blocks of the first ``n_tokens`` positions of
        ``parent`` (a common prompt prefix, stored once; a partly shared last block is
        copied on the child's first write)."""
        if parent not in self.tables:
            raise ValueError(f"no sequence {parent} to fork")
        if child in self.tables:
            raise ValueError(f"sequence {child} already exists")
        if not 0 <= n_tokens <= self.lengths[parent]:
            raise ValueError(f"cannot share {n_tokens} positions of a sequence of "
                             f"{self.lengths[parent]}")
        self.tables[child] = self.tables[parent][:-(-n_tokens // self.block_size)]
        self.lengths[child] = n_tokens
        for b in self.tables[child]:
            self.refcount[b] += 1
        return PagedSequence(self, child)

    def free_sequence(self, seq_id: int) -> None:
        """Drop a finished (or preempted) sequence; unshared blocks return to the free list."""
        if seq_id not in self.tables:
            raise ValueError(f"no sequence {seq_id} to free")
        for b in self.tables.pop(seq_id):
            self._release(b)
        del self.lengths[seq_id]


class PagedSequence:
    """One sequence of a :class:`PagedKVCache`, with :class:`KVCache`'s interface, so
    :func:`spiral.inference.kv_cache.forward_cached` runs on it unchanged."""

    batch_size = 1

    def __init__(self, pool: PagedKVCache, seq_id: int) -> None:
        self.pool, self.seq_id = pool, seq_id

    @property
    def length(self) -> int:
        return self.pool.lengths[self.seq_id]

    def __len__(self) -> int:
        return self.length

    def reserve(self, n: int) -> None:
        self.pool.reserve(self.seq_id, n)

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if k.shape[0] != 1:
            raise ValueError(f"a paged sequence has batch size 1, got keys {k.shape}")
        self.pool.write(self.seq_id, layer, k[0], v[0])
        return self.pool.gather(self.seq_id, layer, self.length + k.shape[-2])

    def advance(self, n: int) -> None:
        self.pool.lengths[self.seq_id] += n
