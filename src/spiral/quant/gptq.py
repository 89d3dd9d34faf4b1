"""GPTQ: quantize a weight column by column, correcting the rest (Frantar et al. 2022).

Each row w of W (out, in) is quantized to minimise ‖wX − ŵX‖² over calibration inputs
X (in, n); the objective's Hessian is H = 2XXᵀ, the same for every row. Optimal Brain
Surgeon (Hassibi & Stork 1993; Frantar & Alistarh 2022) quantizes one weight q of the
remaining set F and moves the others to compensate:

    δ_F = −(w_q − quant(w_q)) / [H_F⁻¹]_qq · (H_F⁻¹)_{q,:},
    H_{F∖q}⁻¹ = H_F⁻¹ − (H_F⁻¹)_{:,q} (H_F⁻¹)_{q,:} / [H_F⁻¹]_qq.

GPTQ takes the columns in a fixed order for all rows at once, so the sequence of inverses
is fixed: row q of the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) is (H_F⁻¹)_{q,F} / √[H_F⁻¹]_qq,
which gives every update without ever forming H_F⁻¹. Updates are applied lazily: within a
block of ``blocksize`` columns immediately, to the columns after the block in one matmul.
Dampening adds λ = percdamp · mean(diag H) to the diagonal; act-order processes columns by
decreasing diag(H). Quantization grids (scale, zero point) are fixed up front from W
("static groups"), so act-order never needs a column permutation at inference time.
``gptq_model`` by default follows the paper's sequential pass: each layer is calibrated
on the inputs it receives from the already-quantized layers before it; for a GPT the
hidden states are carried block by block, as in the reference code.
Chapter: stage 18.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.nn.layers import Linear
from spiral.nn.module import Module
from spiral.quant.linear import QuantLinear, _set_submodule
from spiral.quant.uniform import QTensor, qrange, scale_zero_point, to_rows


def hessian(x: np.ndarray) -> np.ndarray:
    """H = 2/n · XᵀX (in, in) from inputs x (..., in); the 1/n leaves the solution unchanged."""
    xr = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    if xr.shape[0] == 0:
        raise ValueError("hessian needs at least one calibration input")
    return 2.0 / xr.shape[0] * (xr.T @ xr)


def grid(weight: np.ndarray, bits: int, symmetric: bool, granularity: str,
         group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Min–max (scale, zero point) per row layout, broadcast to one pair per weight (out, in)."""
    rows = to_rows(weight, granularity, group_size)
    s, z = scale_zero_point(rows.min(1, keepdims=True), rows.max(1, keepdims=True), bits,
                            symmetric)
    shape = rows.shape
    return (np.broadcast_to(s, shape).reshape(weight.shape),
            np.broadcast_to(z, shape).reshape(weight.shape))


def quantize_column(w: np.ndarray, s: np.ndarray, z: np.ndarray, bits: int,
                    symmetric: bool) -> np.ndarray:
    """Round-to-nearest value (not code) of each entry of w on its grid (s, z)."""
    qmin, qmax = qrange(bits, symmetric)
    return (np.clip(np.round(w / s) + z, qmin, qmax) - z) * s


def damped(h: np.ndarray, percdamp: float = 0.01) -> np.ndarray:
    """H + λI with λ = percdamp · mean(diag H); dead inputs (diag 0) get H_ii = 1 first."""
    if percdamp < 0:
        raise ValueError(f"percdamp must be non-negative, got {percdamp}")
    h = np.array(h, dtype=np.float64)
    d = np.diag(h).copy()
    d[d == 0] = 1.0
    return h - np.diag(np.diag(h)) + np.diag(d + percdamp * d.mean())


def gptq_quantize(weight: np.ndarray, h: np.ndarray, bits: int = 4, *, symmetric: bool = True,
                  granularity: str = "channel", group_size: int = 128, blocksize: int = 128,
                  percdamp: float = 0.01, act_order: bool = False,
                  column_losses: list[float] | None = None) -> QTensor:
    """GPTQ-quantize ``weight`` (out, in) given the Hessian ``h`` (in, in) of its inputs.

    ``column_losses``, if given, receives each column's OBS loss increase in processing
    order, Σ_rows (w_q − quant(w_q))² / (2 [H_F⁻¹]_qq); they sum to ½ Σ_rows δᵀ(H + λI)δ.
    """
    w = np.array(weight, dtype=np.float64)
    n = w.shape[-1]
    if w.ndim != 2 or h.shape != (n, n):
        raise ValueError(f"weight (out, in) and hessian (in, in) disagree: {w.shape}, {h.shape}")
    if blocksize < 1:
        raise ValueError(f"blocksize must be positive, got {blocksize}")
    w[:, np.diag(h) == 0] = 0.0  # an input that is always zero: its weight does not matter
    s, z = grid(w, bits, symmetric, granularity, group_size)
    hd = damped(h, percdamp)
    perm = np.argsort(-np.diag(hd), kind="stable") if act_order else np.arange(n)
    w, hd, s_p, z_p = w[:, perm], hd[np.ix_(perm, perm)], s[:, perm], z[:, perm]
    try:
        u = np.linalg.cholesky(np.linalg.inv(hd)).T  # H⁻¹ = UᵀU, U upper triangular
    except np.linalg.LinAlgError as e:
        raise ValueError("hessian is not positive definite; raise percdamp") from e
    q = np.zeros_like(w)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        w1, u1 = w[:, i1:i2].copy(), u[i1:i2, i1:i2]
        err1 = np.zeros_like(w1)
        for i in range(i2 - i1):
            col = w1[:, i]
            qc = quantize_column(col, s_p[:, i1 + i], z_p[:, i1 + i], bits, symmetric)
            q[:, i1 + i] = qc
            err = (col - qc) / u1[i, i]
            if column_losses is not None:
                column_losses.append(float(np.sum(err**2) / 2))
            w1[:, i:] -= np.outer(err, u1[i, i:])
            err1[:, i] = err
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # the lazy batched update of later columns
    inv = np.argsort(perm)
    q = q[:, inv]
    codes = np.round(q / s) + z
    dtype = np.int8 if symmetric else np.uint8
    rows = to_rows(codes, granularity, group_size).astype(dtype)
    scale = to_rows(s, granularity, group_size)[:, :1].astype(weight.dtype)
    zp = to_rows(z, granularity, group_size)[:, :1].astype(np.int32)
    return QTensor(rows, scale, zp, bits, symmetric, granularity, tuple(weight.shape))


class _Recorder(Module):
    """Stands in for a Linear during calibration: keeps its inputs, returns its outputs."""

    def __init__(self, layer: Linear) -> None:
        super().__init__()
        self.layer = layer
        self.inputs: list[np.ndarray] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(np.asarray(x.data).reshape(-1, self.layer.in_features))
        out: Tensor = self.layer(x)
        return out


def _record(model: Module, layers: dict[str, Linear], calibration: Any,
            prefix: str = "") -> dict[str, np.ndarray]:
    """Inputs (tokens, in) of each named layer in one forward pass of ``model`` (no graph);
    ``prefix`` is ``model``'s own name inside the model the layer names refer to."""
    from spiral.autograd import no_grad

    recorders = {n: _Recorder(m) for n, m in layers.items()}
    for n, r in recorders.items():
        _set_submodule(model, n[len(prefix):], r)
    try:
        with no_grad():
            model(calibration)
    finally:
        for n, m in layers.items():
            _set_submodule(model, n[len(prefix):], m)
    return {n: np.concatenate(r.inputs) for n, r in recorders.items()}


def _quantize_in_order(root: Module, part: Module, prefix: str, remaining: dict[str, Linear],
                       x: Any, bits: int, sequential: bool, kwargs: dict[str, Any]) -> None:
    """GPTQ the ``remaining`` layers of ``part`` (named ``prefix`` in ``root``) on input x."""
    inputs: dict[str, np.ndarray] = {}
    while remaining:
        if sequential or not inputs:
            inputs = _record(part, remaining, x, prefix)
        x0 = inputs[next(iter(remaining))]
        group = [n for n in remaining if not sequential
                 or (inputs[n].shape == x0.shape and np.array_equal(inputs[n], x0))]
        for n in group:
            m = remaining.pop(n)
            q = gptq_quantize(m.weight.data, hessian(inputs[n]), bits, **kwargs)
            _set_submodule(root, n, QuantLinear(q, None if m.bias is None else m.bias.data,
                                                None, dtype=m.weight.data.dtype))


def gptq_model(model: Module, calibration: Any, bits: int = 4, *,
               include: Sequence[str] = ("*",), exclude: Sequence[str] = ("lm_head",),
               sequential: bool = True, **kwargs: Any) -> list[str]:
    """GPTQ every matching ``Linear`` of ``model`` (in place) from calibration token ids.

    ``sequential`` (the paper's pass): layers are quantized in forward order, each from the
    inputs it receives once every earlier layer is already quantized, so later layers
    correct the errors of earlier ones; layers that read the same input (Q/K/V, gate/up)
    are quantized together. Otherwise every layer is calibrated on the float model's inputs
    from one pass. ``kwargs`` go to :func:`gptq_quantize`; returns the swapped names. The
    head is excluded by default because a GPT reads it through ``head_weight``.
    """
    targets = {n: m for n, m in model.named_modules() if isinstance(m, Linear) and n
               and any(fnmatch(n, p) for p in include)
               and not any(fnmatch(n, p) for p in exclude)}
    remaining = dict(targets)
    blocks = getattr(model, "blocks", None)
    if sequential and blocks is not None and hasattr(model, "_embed"):
        # the paper's pass: carry the hidden states block by block through the quantized
        # blocks, so each block costs one forward per group, not a whole model's forward
        from spiral.autograd import no_grad

        with no_grad():
            gpt: Any = model
            x = gpt.drop(gpt._embed(np.asarray(calibration)))
            for i, blk in enumerate(blocks):
                pre = f"blocks.{i}."
                mine = {n: remaining.pop(n) for n in list(remaining) if n.startswith(pre)}
                _quantize_in_order(model, blk, pre, mine, x, bits, True, kwargs)
                x = blk(x)
    _quantize_in_order(model, model, "", remaining, calibration, bits, sequential, kwargs)
    return list(targets)
