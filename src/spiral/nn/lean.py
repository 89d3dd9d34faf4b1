"""The lean saving policy (stage 12): keep for backward only what torch keeps, recompute the rest.

``GPTConfig(saved="lean")`` swaps a few graph nodes for ones that save less. Every swap runs
the SAME array operations in the same order as the node(s) it replaces, so logits, loss and
every gradient are bit-identical to ``saved="all"`` (the tests hold them equal, float32 and
float64, dropout on). What each swap saves per layer, with N = B·T rows, C = d_model, h the
FFN width, s bytes per element and the keep-mask of dropout at one byte an entry:

    LayerNorm   keeps x̂ (N·C) and rstd (N); lean keeps μ and rstd (N each) and the input,
                which is the residual stream, alive anyway; backward recomputes
                x̂ = (x − μ)·rstd with the forward's two ops            saves (N·C − N)·s
    RMSNorm     keeps x̂ (N·C) and 1/rms (N); lean keeps 1/rms, x̂ = x·(1/rms)   N·C·s
    GELU        keeps x and Φ(x) (N·h each); lean keeps x (the first linear's output, a
                graph node anyway) and recomputes Φ block by block                N·h·s
                (in a pre-LN block the GELU joins the FFN's residual node below, which
                keeps x and GELU(x), as torch does, and lets GELU(x) go in backward as
                soon as dW is formed, before Φ is recomputed)
    residual    x + Dropout(a Wᵀ + b) as three nodes keeps a Wᵀ + b (N·C, read by no
    branch      backward) and, with p > 0, the dropout's output (N·C, read by none either)
                and its scaled float mask (N·C·s); lean runs the three as ONE node keeping
                a, W and a boolean mask (N bytes·C)       N·C·s, or N·C·(3s − 1) with p > 0
                — twice per block (attention's output projection and the FFN's)
    embeddings  E[ids] + P[:T], then dropout, keeps E[ids] (N·C), P[:T] (T·C) and the
                position ids (T·8); with p > 0 also the sum and the float mask. Lean: one
                node keeping the ids and a boolean mask      (N·C + T·C)·s + 8T
                                                   (+ N·C·(2s − 1) with p > 0)
    head merge  the attention output (B, H, T, hd) -> (B, T, H·hd) is a copy (N·C) unless
                the output already lies sequence-major in memory, as torch's CPU flash kernel
                allocates it; with a tiled kernel (``attention="flash"``) lean asks for that
                layout, and the merge is a view                                   N·C·s
                (naive attention's output is one batched matrix product into a fresh array:
                the merge stays a copy there)

What lean does NOT touch: the logits (N·V, read by no backward: the loss is taken outside
the model, so the graph node that holds them is the loss's parent), attention itself (the
flash kernel already keeps the log-sum-exp instead of P), SwiGLU's SiLU (a composition of
primitives). :func:`lean_saving` sums the terms for a config; the tests compare it with
the profiler. Papers: Korthikanti et al. (2022) for what a layer keeps; Chen et al. (2016).
Chapter: stage 12 (memory optimization), "Keeping what torch keeps".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral.autograd import Function, Tensor
from spiral.autograd import hooks as _hooks
from spiral.autograd.engine import _unbroadcast
from spiral.autograd.ops_shape import _scatter_add_rows
from spiral.nn import kernels as K
from spiral.nn.activations import GELU
from spiral.nn.functional import layer_norm_input_grads
from spiral.nn.layers import Dropout, Embedding, Linear
from spiral.nn.norm import LayerNorm, RMSNorm, rms_norm_backward

__all__ = ["SAVED_POLICIES", "LeanLayerNorm", "LeanRMSNorm", "LeanGELU", "residual_linear",
           "lean_embed", "lean_saving"]

SAVED_POLICIES = ("all", "lean")


def _scratch(op: str, *arrays: Any) -> None:
    """Report arrays a lean node allocates inside itself (a recomputed x̂ or Φ, an
    intermediate gradient) to a listening memory profiler, so that fusing hides nothing:
    separate nodes would have handed these over where the profiler sees them."""
    for hook in tuple(_hooks._HOOKS):
        track = getattr(hook, "track_scratch", None)
        if track is not None:
            track(op, [a for a in arrays if a is not None])


# ----------------------------------------------------------------------------- norms
class LeanLayerNormFn(Function):
    """Layer norm saving (x, μ, rstd); backward recomputes x̂ (torch's own choice)."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, n_norm: int, eps: float,
                weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
        xhat, mean, rstd = K.layer_norm_normalize(x, n_norm, eps)
        y = xhat * weight if weight is not None else xhat
        if bias is not None:
            y += bias
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.n_norm, ctx.n_inputs = n_norm, 3 + (weight is not None) + (bias is not None)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        x, mean, rstd, weight = ctx.saved_tensors
        xhat = K.layer_norm_recompute(x, ctx.n_norm, mean, rstd)
        _scratch("LeanLayerNormFn", xhat)
        return layer_norm_input_grads(ctx, grad, xhat, rstd, weight)


class LeanLayerNorm(LayerNorm):
    """:class:`~spiral.nn.norm.LayerNorm` (same parameters) that keeps μ and rstd, not x̂."""

    def forward(self, x: Tensor) -> Tensor:
        shape = self.normalized_shape
        if tuple(x.shape[-len(shape):]) != shape:
            raise ValueError(f"normalized_shape {shape} does not end input shape {x.shape}")
        weight: Tensor | None = self.weight
        if weight is None and self.bias is not None:
            weight = Tensor(np.ones(shape, dtype=x.dtype))
        args = [a for a in (weight, self.bias) if a is not None]
        return LeanLayerNormFn.apply(x, len(shape), self.eps, *args)


class LeanRMSNormFn(Function):
    """RMSNorm saving (x, 1/rms); backward recomputes x̂ = x · (1/rms)."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, n_norm: int, eps: float,
                weight: np.ndarray | None = None) -> np.ndarray:
        axes = tuple(range(x.ndim - n_norm, x.ndim))
        rrms = (1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)).astype(x.dtype)
        xhat = x * rrms
        ctx.save_for_backward(x, rrms, weight)
        ctx.n_norm = n_norm
        return xhat * weight if weight is not None else xhat

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        x, rrms, weight = ctx.saved_tensors
        xhat = x * rrms
        _scratch("LeanRMSNormFn", xhat)
        return rms_norm_backward(grad, xhat, rrms, weight, ctx.n_norm)


class LeanRMSNorm(RMSNorm):
    """:class:`~spiral.nn.norm.RMSNorm` (same parameters) that keeps 1/rms, not x̂."""

    def forward(self, x: Tensor) -> Tensor:
        shape = self.normalized_shape
        if tuple(x.shape[-len(shape):]) != shape:
            raise ValueError(f"normalized_shape {shape} does not end input shape {x.shape}")
        e = float(np.finfo(x.dtype).eps) if self.eps is None else self.eps
        if self.weight is None:
            return LeanRMSNormFn.apply(x, len(shape), e)
        return LeanRMSNormFn.apply(x, len(shape), e, self.weight)


# ----------------------------------------------------------------------------- GELU
class LeanGELUFn(Function):
    """GELU saving x only; backward recomputes Φ(x) (or tanh u) with the forward's blocks."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, approximate: str) -> np.ndarray:
        y, _ = K.gelu_forward(x, approximate)
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return y

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        return K.gelu_backward_recompute(grad, x, ctx.approximate), None  # Φ: by blocks


class LeanGELU(GELU):
    """:class:`~spiral.nn.activations.GELU` keeping only its input."""

    def forward(self, x: Tensor) -> Tensor:
        return LeanGELUFn.apply(x, self.approximate)


# ----------------------------------------------------------------------------- branches
def _scaled(keep: np.ndarray, p: float, dtype: Any) -> np.ndarray:
    """Dropout's multiplier keep / (1 − p), the same op :class:`Dropout` applies."""
    return keep.astype(dtype) / (1.0 - p)


class ResidualLinearFn(Function):
    """x + Dropout(a Wᵀ + b) as one node: keeps a, W and the boolean keep-mask.

    With ``gelu`` ("none" | "tanh") the node is x + Dropout(GELU(u) Wᵀ + b), the whole GELU
    FFN after its first linear: it keeps u and y = GELU(u) (what torch keeps: y for dW, u
    for GELU'), and in backward lets y go as soon as dW is formed, before GELU'(u) is
    recomputed, where a separate GELU node would still hold its output. Freeing y makes the
    node single-use: ``retain_graph=True`` is refused with a clear error."""

    @staticmethod
    def forward(ctx: Any, x: np.ndarray, a: np.ndarray, weight: np.ndarray,
                bias: np.ndarray | None, keep: np.ndarray | None, p: float,
                gelu: str | None = None) -> np.ndarray:
        u = a
        if gelu is not None:
            a, aux = K.gelu_forward(u, gelu)
            _scratch("ResidualLinearFn", aux)
            del aux
        h = K.linear_forward(a, weight, bias)
        if keep is not None:
            scaled = _scaled(keep, p, h.dtype)
            _scratch("ResidualLinearFn", scaled)
            h = h * scaled
            del scaled
        ctx.save_for_backward(u, a if gelu is not None else None, weight, keep)
        ctx.p, ctx.has_bias, ctx.gelu = p, bias is not None, gelu
        return x + h

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        if not ctx.saved_tensors:
            raise RuntimeError("a lean FFN node frees its saved arrays during backward: "
                               "backward through it once (saved='lean' does not support "
                               "retain_graph=True; use saved='all')")
        u, y, weight, keep = ctx.saved_tensors
        if ctx.gelu is not None:
            ctx.saved_tensors = ()  # y goes once dW is formed
        dh = grad
        if keep is not None:
            dh = grad * _scaled(keep, ctx.p, grad.dtype)
            _scratch("ResidualLinearFn", dh)
        a = u if ctx.gelu is None else y
        da, dw, db = K.linear_backward(dh, a, weight, ctx.has_bias)
        del a, dh
        if ctx.gelu is not None:
            del y
            _scratch("ResidualLinearFn", da)
            da = K.gelu_backward_recompute(da, u, ctx.gelu)
        return grad, da, dw, db, None, None, None


def _keep(drop: Dropout | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if drop is None or not drop.training or drop.p == 0.0:
        return None
    return drop.keep_mask(shape)


def residual_linear(x: Tensor, a: Tensor, proj: Linear, drop: Dropout | None,
                    gelu: str | None = None) -> Tensor:
    """x + drop(proj(a)) as one node (bit-identical to the three; the mask drawn as
    :class:`Dropout` draws it); with ``gelu`` ("none" | "tanh"): x + drop(proj(GELU(a)))."""
    if gelu not in (None, "none", "tanh"):
        raise ValueError(f"gelu must be None, 'none' or 'tanh', got {gelu!r}")
    keep = _keep(drop, (*a.shape[:-1], proj.out_features))
    p = drop.p if drop is not None else 0.0
    return ResidualLinearFn.apply(x, a, proj.weight, proj.bias, keep, p, gelu)


class LeanEmbedFn(Function):
    """Dropout(E[ids] + P[:T]) as one node: keeps the ids and the boolean keep-mask."""

    @staticmethod
    def forward(ctx: Any, weight: np.ndarray, pos: np.ndarray | None, ids: np.ndarray,
                keep: np.ndarray | None, p: float) -> np.ndarray:
        T = ids.shape[-1]
        x = weight[ids]
        if pos is not None:
            x = x + pos[np.arange(T)]
        if keep is not None:
            x = x * _scaled(keep, p, x.dtype)
        ctx.save_for_backward(ids, keep)
        ctx.shapes, ctx.p = (weight.shape, None if pos is None else pos.shape), p
        return x

    @staticmethod
    def backward(ctx: Any, grad: np.ndarray) -> tuple[Any, ...]:
        ids, keep = ctx.saved_tensors
        wshape, pshape = ctx.shapes
        g = grad * _scaled(keep, ctx.p, grad.dtype) if keep is not None else grad
        if keep is not None:
            _scratch("LeanEmbedFn", g)
        dw = np.zeros(wshape, dtype=g.dtype)
        _scatter_add_rows(dw, ids, g)
        dp = None
        if pshape is not None:
            T = ids.shape[-1]
            dp = np.zeros(pshape, dtype=g.dtype)
            _scatter_add_rows(dp, np.arange(T), _unbroadcast(g, (T, pshape[-1])))
        return dw, dp, None, None, None


def lean_embed(tok: Embedding, pos: Embedding | None, ids: np.ndarray,
               drop: Dropout | None) -> Tensor:
    """drop(tok(ids) + pos(arange(T))) as one node (pos None: drop(tok(ids)))."""
    idx = tok.check_ids(ids)
    T = idx.shape[-1]
    if pos is not None and T > pos.num_embeddings:
        raise ValueError(f"learned positions exist for 0..{pos.num_embeddings - 1} only; "
                         f"a sequence of {T} tokens is too long (never clamped)")
    keep = _keep(drop, (*idx.shape, tok.embedding_dim))
    p = drop.p if drop is not None else 0.0
    return LeanEmbedFn.apply(tok.weight, None if pos is None else pos.weight, idx, keep, p)


# ----------------------------------------------------------------------------- the sum
def lean_saving(config: Any, batch: int, context: int, itemsize: int = 4,
                training: bool = True) -> dict[str, int]:
    """Bytes of activations ``saved="lean"`` keeps fewer than ``saved="all"`` at the end of
    the forward pass, term by term (the module docstring's table) for a pre-LN GPT config
    with ``bias=False``; ``training`` says whether dropout (``config.dropout``) is active."""
    c, s = config, itemsize
    if c.placement != "pre" or not c.residual or not c.ffn:
        raise ValueError("lean_saving models the pre-LN GPT with residuals and an FFN; "
                         f"got placement={c.placement!r}, residual={c.residual}, "
                         f"ffn={c.ffn}")
    N, C, T, L = batch * context, c.d_model, context, c.n_layers
    dropout = training and c.dropout > 0
    mask = N * C * (2 * s - 1) if dropout else 0  # float mask and its input -> bool mask
    norm = (N * C - N) * s if c.norm_type == "layernorm" else N * C * s
    terms = {"norms: x̂ recomputed": ((2 * L + 1) if c.norm else 0) * norm,
             "residual branches: one node": 2 * L * (N * C * s + mask)}
    if c.ffn_type == "gelu":
        terms["GELU: Φ(x) recomputed"] = L * N * c.hidden * s
    learned = N * C * s + T * C * s + 8 * T if c.positional == "learned" else 0
    terms["embeddings: one node"] = learned + mask
    if c.attention != "naive":
        terms["head merge: a view"] = L * N * C * s
    return terms
