"""A model of the memory hierarchy for attention: on-chip memory of M bytes, HBM beyond it.

A GPU keeps tiles in fast on-chip SRAM (≈ 20 MB over all SMs on an A100, ~100 KB per SM)
and everything else in high-bandwidth memory (HBM, 40-80 GB at ≈ 2 TB/s, an order of
magnitude slower than SRAM). Attention at sequence length N and head size d is then limited
by how many bytes cross that boundary (Dao et al., 2022, Theorem 2):

    standard attention:  Θ(N·d + N²)       (S and P are written to and read back from HBM)
    flash attention:     Θ(N²·d² / M)      (Q, K, V streamed through tiles of ~M/(4d) rows)

``IOCounter`` is the book-keeping: kernels call ``load``/``store`` for every array that
crosses the boundary and ``on_chip`` for the working set of each tile step, so the bytes
moved are COUNTED as the kernel runs. The closed forms below are the same counts derived on
paper (tile by tile); the tests check the two agree for every block size.
Paper: Dao et al. (2022), "FlashAttention: fast and memory-efficient exact attention with
IO-awareness"; Dao (2023), FlashAttention-2. Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["IOCounter", "naive_io", "flash_io", "tiles_for_memory", "visited_keys"]


@dataclass
class IOCounter:
    """Bytes read from and written to main memory, and the largest on-chip working set.

    ``sram_bytes`` is M; a tile step whose working set exceeds it raises (the blocks chosen
    do not fit on chip). ``None`` models an unbounded chip (only counting)."""

    sram_bytes: int | None = None
    bytes_read: int = 0
    bytes_written: int = 0
    peak_on_chip: int = 0

    def load(self, *sizes: int, itemsize: int = 4) -> None:
        """Count arrays of ``sizes`` elements read from main memory."""
        self.bytes_read += itemsize * sum(sizes)

    def store(self, *sizes: int, itemsize: int = 4) -> None:
        """Count arrays of ``sizes`` elements written to main memory."""
        self.bytes_written += itemsize * sum(sizes)

    def on_chip(self, *sizes: int, itemsize: int = 4) -> None:
        """Declare one tile step's working set (elements); checked against M."""
        b = itemsize * sum(sizes)
        self.peak_on_chip = max(self.peak_on_chip, b)
        if self.sram_bytes is not None and b > self.sram_bytes:
            raise ValueError(f"a tile step needs {b} bytes on chip but M = {self.sram_bytes}; "
                             "use smaller block_q / block_k")

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


def visited_keys(n_query: int, n_key: int, block_q: int, block_k: int, causal: bool) -> int:
    """Σ over query blocks of the keys a tiled kernel loads: all S of them, or, when causal
    (key j ≤ query i), the key blocks that start before the query block ends."""
    total = 0
    for i0 in range(0, n_query, block_q):
        i1 = min(i0 + block_q, n_query)
        total += min(n_key, math.ceil(i1 / block_k) * block_k) if causal else n_key
    return total


def naive_io(L: int, S: int, E: int, Ev: int, backward: bool = False) -> int:
    """Elements moved by standard attention (Dao et al.'s Algorithm 0) per (batch, head).

    forward: read Q, K; write S; read S; write P; read P, V; write O
             = L·E + S·E + S·Ev + L·Ev + 4·L·S
    backward: read P, dO → dV; read dO, V → dP; read P, dP → dS; read dS, K → dQ;
              read dS, Q → dK     = 2·L·Ev + 2·S·Ev + 2·S·E + 2·L·E + 7·L·S"""
    if not backward:
        return L * E + S * E + S * Ev + L * Ev + 4 * L * S
    return 2 * L * Ev + 2 * S * Ev + 2 * S * E + 2 * L * E + 7 * L * S


def flash_io(L: int, S: int, E: int, Ev: int, block_q: int, block_k: int,
             causal: bool = False, backward: bool = False) -> int:
    """Elements moved by the tiled kernels (FlashAttention-2's loop order) per (batch, head).

    forward (outer loop over query blocks): read Q once, K and V once PER QUERY BLOCK
    (only the visited key blocks when causal), write O and the log-sum-exp:
        L·E + K_vis·(E + Ev) + L·Ev + L,       K_vis = ⌈L/Br⌉·S without a mask
    backward: D = rowsum(dO ⊙ O) (read O, dO; write D), then, outer loop over key blocks,
    read K_j, V_j, and per visited query block read Q_i, dO_i, lse_i, D_i, dQ_i and write
    dQ_i back; finally write dK_j, dV_j:
        2·L·Ev + L + S·(E + Ev) + Q_vis·(2E + Ev + 2 + E) + S·(E + Ev)
    With Br = Bc = Θ(M/d) the dominant term ⌈L/Br⌉·S·(E + Ev) is Θ(N²d²/M)."""
    if not backward:
        return L * E + visited_keys(L, S, block_q, block_k, causal) * (E + Ev) + L * Ev + L
    q_vis = _visited_queries(L, S, block_q, block_k, causal)
    return 2 * L * Ev + L + 2 * S * (E + Ev) + q_vis * (3 * E + Ev + 2)


def _visited_queries(L: int, S: int, block_q: int, block_k: int, causal: bool) -> int:
    """Σ over key blocks of the query rows loaded: all L, or, when causal, the query blocks
    that end after the key block starts."""
    total = 0
    for j0 in range(0, S, block_k):
        total += sum(min(i0 + block_q, L) - i0 for i0 in range(0, L, block_q)
                     if not causal or min(i0 + block_q, L) > j0)
    return total


def tiles_for_memory(sram_bytes: int, head_dim: int, itemsize: int = 4) -> int:
    """The largest square block B (Br = Bc = B) whose working sets fit in M bytes.

    forward: Q_i and the accumulator (B·d each), K_j, V_j (B·d each), the B×B score tile,
    m and ℓ (B each): 4·B·d + B² + 2·B. backward (the larger): K_j, V_j, dK_j, dV_j, Q_i,
    dO_i, dQ_i (7·B·d), λ_i and D_i (2·B), the P and dS tiles (2·B²):
        2·B² + (7·d + 2)·B ≤ M / itemsize,   so B ≈ M / (7·d·itemsize) = Θ(M/d)."""
    m = sram_bytes // itemsize
    a = 7 * head_dim + 2
    b = int((-a + math.sqrt(a * a + 8 * m)) / 4)
    if b < 1:
        raise ValueError(f"M = {sram_bytes} bytes cannot hold even one row of a tile "
                         f"with head_dim {head_dim}")
    return b
