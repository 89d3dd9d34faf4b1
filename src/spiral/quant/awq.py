"""AWQ: activation-aware weight quantization by per-input-channel scaling (Lin et al. 2024).

A few input channels carry large activations; their weights matter most. Scaling input
channel j of W up by s_j > 0 and its input down by the same factor leaves the layer's
function unchanged, ``W x = (W diag(s)) (diag(s)⁻¹ x)``, but the scaled column is quantized
with relatively smaller rounding error (the group's scale grows less than the column does).
AWQ picks s = s_x^α, with s_x the mean |x_j| of each input channel over calibration
tokens, and chooses α in [0, 1] by grid search on the layer's output error

    L(α) = ‖X Wᵀ − X (Q(W diag(s)) diag(s)⁻¹)ᵀ‖² / N,        s = s_x^α / √(max s · min s),

where Q is round-to-nearest (α = 0 is plain RTN, so the search never does worse on the
calibration inputs). Layers reading the same input (Q, K, V; gate and up) share one s.
The 1/s is folded into whatever produced the input: the RMSNorm's gain before Q/K/V and
before gate/up, the rows of up_proj (w3) before down_proj (w2), the V rows before the
attention output when every head has its own V (with grouped-query attention the V rows
are shared, so out_proj is quantized without scaling, as in the reference code).
Not implemented: AWQ's second search, over weight clipping ranges.
Chapter: stage 18.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spiral.nn.layers import Linear
from spiral.nn.module import Module
from spiral.quant.gptq import _Recorder
from spiral.quant.linear import QuantLinear, _set_submodule
from spiral.quant.uniform import dequantize, quantize


def awq_loss(weights: np.ndarray, x: np.ndarray, s: np.ndarray, bits: int,
             **qkw: Any) -> float:
    """Mean squared output error of RTN on W·diag(s), undone by diag(s)⁻¹, on inputs x."""
    wq = dequantize(quantize(weights * s, bits, **qkw)) / s
    return float(np.mean((x @ (weights - wq).T) ** 2))


def awq_search(weights: Sequence[np.ndarray], x: np.ndarray, bits: int = 4, *,
               n_grid: int = 20, granularity: str = "group", group_size: int = 128,
               symmetric: bool = True) -> tuple[np.ndarray, float, np.ndarray]:
    """Best scales s (in,) for the layers ``weights`` (each (out_i, in)) sharing inputs x.

    Returns (s, α, losses over the grid α = 0, 1/n_grid, ..., 1).
    """
    if n_grid < 1:
        raise ValueError(f"n_grid must be positive, got {n_grid}")
    w = np.concatenate([np.asarray(m, dtype=np.float64) for m in weights], axis=0)
    xr = np.asarray(x, dtype=np.float64).reshape(-1, w.shape[1])
    if xr.shape[0] == 0:
        raise ValueError("awq_search needs at least one calibration input")
    s_x = np.abs(xr).mean(axis=0)
    alphas = np.linspace(0.0, 1.0, n_grid + 1)
    losses = np.empty_like(alphas)
    qkw = dict(granularity=granularity, group_size=group_size, symmetric=symmetric)
    for i, a in enumerate(alphas):
        losses[i] = awq_loss(w, xr, awq_scales(s_x, float(a)), bits, **qkw)
    best = int(np.argmin(losses))
    return awq_scales(s_x, float(alphas[best])), float(alphas[best]), losses


def awq_scales(s_x: np.ndarray, alpha: float) -> np.ndarray:
    """s = s_x^α, clamped away from 0 and normalised to geometric-mean-of-extremes 1."""
    s = np.maximum(s_x, 1e-4) ** alpha
    return s / np.sqrt(s.max() * s.min())


def _groups(model: Module) -> list[tuple[list[str], Any]]:
    """(names of the Linears sharing an input, how to fold 1/s into its producer) per block."""
    groups: list[tuple[list[str], Any]] = []
    blk: Any
    for bname, blk in model.named_modules():
        if not (hasattr(blk, "ln1") and hasattr(blk, "attn") and hasattr(blk, "ffn")):
            continue
        attn, ffn = blk.attn, blk.ffn
        groups.append(([f"{bname}.attn.qkv_proj"], ("norm", blk.ln1)))
        n_kv = getattr(attn, "n_kv_heads", attn.n_heads)
        if n_kv == attn.n_heads:  # V rows are out_proj's input channels one to one
            groups.append(([f"{bname}.attn.out_proj"], ("rows", attn.qkv_proj,
                                                        2 * attn.out_proj.in_features)))
        if hasattr(ffn, "w1"):
            groups.append(([f"{bname}.ffn.w1", f"{bname}.ffn.w3"], ("norm", blk.ln2)))
            groups.append(([f"{bname}.ffn.w2"], ("rows", ffn.w3, 0)))
        elif hasattr(ffn, "fc"):
            groups.append(([f"{bname}.ffn.fc"], ("norm", blk.ln2)))
    return groups


def _fold(producer: Any, s: np.ndarray) -> None:
    """Divide the producer of a group's input by s, so that its output becomes x / s."""
    if producer[0] == "norm":
        norm = producer[1]
        norm.weight.data[...] = norm.weight.data / s
        if getattr(norm, "bias", None) is not None:
            norm.bias.data[...] = norm.bias.data / s
    else:
        layer, start = producer[1], producer[2]
        rows = slice(start, start + s.size)
        layer.weight.data[rows] = layer.weight.data[rows] / s[:, None]


def scale_and_fold(modules: dict[str, Any], plans: list[tuple[list[str], Any, np.ndarray]]
                   ) -> None:
    """W ← W·diag(s) for each group's layers and 1/s into its producer: same float function."""
    for names, producer, s in plans:
        for n in names:
            w = modules[n].weight.data
            w[...] = (w * s).astype(w.dtype)
        _fold(producer, s.astype(np.float64))


def awq_model(model: Module, calibration: Any, bits: int = 4, *, n_grid: int = 20,
              granularity: str = "group", group_size: int = 128, symmetric: bool = True,
              exclude: Sequence[str] = ("lm_head",)) -> dict[str, float]:
    """AWQ every block's Linears of ``model`` in place from calibration token ids.

    Scales are searched on float inputs (one pass; scaling leaves the float model's function
    unchanged), folded into the producers, then every Linear is RTN-quantized. Returns the
    chosen α per group (keyed by its first layer); layers with no foldable producer get α = 0.
    """
    modules: dict[str, Any] = dict(model.named_modules())
    targets = [n for n, m in modules.items() if isinstance(m, Linear) and n
               and n not in exclude]
    recorders = {n: _Recorder(modules[n]) for n in targets}
    for n, r in recorders.items():
        _set_submodule(model, n, r)
    try:
        model(calibration)
    finally:
        for n in targets:
            _set_submodule(model, n, modules[n])
    qkw = dict(granularity=granularity, group_size=group_size, symmetric=symmetric)
    alphas = {n: 0.0 for n in targets}
    plans = []
    for names, producer in _groups(model):
        names = [n for n in names if n in recorders]
        if not names:
            continue
        x = np.concatenate(recorders[names[0]].inputs)
        ws = [modules[n].weight.data for n in names]
        s, alpha, _ = awq_search(ws, x, bits, n_grid=n_grid, **qkw)  # type: ignore[arg-type]
        plans.append((names, producer, s))
        alphas.update({n: alpha for n in names})
    scale_and_fold(modules, plans)  # after every search: the searches saw float inputs
    for n in targets:
        layer = modules[n]
        assert isinstance(layer, Linear)
        _set_submodule(model, n, QuantLinear.from_linear(layer, bits, **qkw))  # type: ignore[arg-type]
    return alphas
