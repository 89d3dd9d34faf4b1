"""Tensor parallelism (Megatron-LM): split each weight matrix across N ranks.

For y = x Wᵀ with W (out, in):

- **column-parallel**: cut W by rows (output features), W = [W₁; …; W_N]. Rank r computes
  y_r = x W_rᵀ, a slice of y's features; no communication forward. Backward, x̄ = Σ_r ȳ_r W_r
  is a SUM of partial products: an all-reduce.
- **row-parallel**: cut W by columns (input features), W = [W₁ … W_N]; rank r holds x_r, the
  matching slice of x, and computes the partial y⁽ʳ⁾ = x_r W_rᵀ; y = Σ_r y⁽ʳ⁾ needs an
  all-reduce forward, none backward (ȳ is replicated).

Megatron's FFN is column-then-row: GELU acts feature-wise, so the column layer's slice of
features feeds the row layer directly, and one all-reduce per direction remains, placed by
two conjugate operators (Shoeybi et al. 2019, §3):

    f: identity forward, all-reduce backward      (enters the parallel region)
    g: all-reduce forward, identity backward      (leaves it)

Attention splits the same way by heads: Q, K, V projections column-parallel (rank r keeps
its H/N heads), the output projection row-parallel. Outside the parallel regions (norms,
embeddings, residual stream) activations are identical on every rank, so replicated
parameters get identical gradients. Chapter: stage 13 (column/row-parallel products).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Function, Tensor
from spiral.distributed.runtime import Comm
from spiral.nn import functional as F
from spiral.nn.layers import Linear
from spiral.nn.module import Module, Parameter
from spiral.nn.transformer import FeedForward, MultiHeadAttention

__all__ = ["copy_to_parallel_region", "reduce_from_parallel_region", "ColumnParallelLinear",
           "RowParallelLinear", "ParallelMLP", "ParallelAttention", "parallelize_gpt",
           "unshard_state"]


class _CopyToParallelRegion(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, comm: Comm) -> np.ndarray:
        ctx.comm = comm
        return x

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        g = np.ascontiguousarray(grad).copy()
        ctx.comm.all_reduce(g, op="tp")
        return g, None


class _ReduceFromParallelRegion(Function):
    @staticmethod
    def forward(ctx: Any, x: np.ndarray, comm: Comm) -> np.ndarray:
        y = np.ascontiguousarray(x).copy()
        comm.all_reduce(y, op="tp")
        return y

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        return grad, None


def copy_to_parallel_region(x: Tensor, comm: Comm) -> Tensor:
    """Megatron's f: identity forward, all-reduce of the gradient backward."""
    return _CopyToParallelRegion.apply(x, comm)


def reduce_from_parallel_region(x: Tensor, comm: Comm) -> Tensor:
    """Megatron's g: all-reduce forward, identity backward."""
    return _ReduceFromParallelRegion.apply(x, comm)


def _rows(full: Linear, rows: np.ndarray) -> tuple[Parameter, Parameter | None]:
    w = Parameter(full.weight.data[rows].copy())
    b = None if full.bias is None else Parameter(full.bias.data[rows].copy())
    return w, b


class ColumnParallelLinear(Module):
    """Rank ``comm.rank``'s rows of a Linear: (..., in) -> (..., out/N); f on the input."""

    def __init__(self, full: Linear, comm: Comm, rows: np.ndarray | None = None,
                 enter_region: bool = True) -> None:
        super().__init__()
        N, r = comm.size, comm.rank
        if rows is None:
            if full.out_features % N:
                raise ValueError(f"out_features={full.out_features} not divisible by N={N}")
            n = full.out_features // N
            rows = np.arange(r * n, (r + 1) * n)
        self.comm, self.enter_region = comm, enter_region
        self.weight, self.bias = _rows(full, rows)

    def forward(self, x: Tensor) -> Tensor:
        if self.enter_region:
            x = copy_to_parallel_region(x, self.comm)
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(Module):
    """Rank ``comm.rank``'s columns of a Linear: (..., in/N) -> (..., out); g on the output."""

    def __init__(self, full: Linear, comm: Comm, cols: np.ndarray | None = None) -> None:
        super().__init__()
        N, r = comm.size, comm.rank
        if cols is None:
            if full.in_features % N:
                raise ValueError(f"in_features={full.in_features} not divisible by N={N}")
            n = full.in_features // N
            cols = np.arange(r * n, (r + 1) * n)
        self.comm = comm
        self.weight = Parameter(full.weight.data[:, cols].copy())
        self.bias = None if full.bias is None else Parameter(full.bias.data.copy())

    def forward(self, x: Tensor) -> Tensor:
        y = reduce_from_parallel_region(F.linear(x, self.weight), self.comm)
        return y if self.bias is None else y + self.bias  # the bias is added once, after g


class ParallelMLP(Module):
    """Megatron's FFN: column-parallel W₁, GELU on the local features, row-parallel W₂."""

    def __init__(self, ffn: FeedForward, comm: Comm) -> None:
        super().__init__()
        self.fc = ColumnParallelLinear(ffn.fc, comm)
        self.act = ffn.act
        self.proj = RowParallelLinear(ffn.proj, comm)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))


class ParallelAttention(Module):
    """Attention with rank r's H/N heads: Q, K, V column-parallel, W_O row-parallel."""

    def __init__(self, mha: MultiHeadAttention, comm: Comm) -> None:
        super().__init__()
        N, r, C = comm.size, comm.rank, mha.d_model
        if mha.n_heads % N:
            raise ValueError(f"n_heads={mha.n_heads} not divisible by N={N}")
        if mha.positional not in ("learned", "sinusoidal", "none"):
            raise ValueError("parallel attention supports additive positions only")
        self.n_heads, self.head_dim = mha.n_heads // N, mha.head_dim
        width = self.n_heads * self.head_dim
        mine = np.arange(r * width, (r + 1) * width)  # this rank's features inside Q, K or V
        self.qkv_proj = ColumnParallelLinear(mha.qkv_proj, comm,
                                             rows=np.concatenate([mine, C + mine, 2 * C + mine]))
        self.out_proj = RowParallelLinear(mha.out_proj, comm, cols=mine)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        qkv = self.qkv_proj(x)  # (B, T, 3·H/N·hd)
        # (B, T, 3, H/N, hd) -> (3, B, H/N, T, hd)
        qkv = qkv.reshape(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, C/N)
        return self.out_proj(y)


def parallelize_gpt(model: Any, comm: Comm) -> Any:
    """Replace every block's attention and FFN by their tensor-parallel halves, in place."""
    for blk in model.blocks:
        blk.attn = ParallelAttention(blk.attn, comm)
        if blk.ffn is not None:
            blk.ffn = ParallelMLP(blk.ffn, comm)
    return model


def unshard_state(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Reassemble the full parameters from the N ranks' tensor-parallel state dicts."""
    out: dict[str, np.ndarray] = {}
    for name, first in states[0].items():
        parts = [s[name] for s in states]
        if name.endswith(("qkv_proj.weight", "qkv_proj.bias")):
            # each rank holds [its Q rows; its K rows; its V rows]
            thirds = [np.split(p, 3, axis=0) for p in parts]
            out[name] = np.concatenate([np.concatenate([t[j] for t in thirds])
                                        for j in range(3)])
        elif name.endswith(("fc.weight", "fc.bias")):
            out[name] = np.concatenate(parts, axis=0)
        elif name.endswith("proj.weight"):
            out[name] = np.concatenate(parts, axis=1)  # out_proj and ffn.proj: by columns
        else:
            out[name] = first  # replicated
    return out
