"""spiral.amp: mixed precision — float formats, an autocast policy, dynamic loss scaling.

* :mod:`spiral.amp.formats`: bit layouts, ranges and rounding (float16, bfloat16, float8);
* :mod:`spiral.amp.autocast`: which ops run in low precision (matmuls) and which stay in
  float32 (softmax, norms, losses), with float32 master weights;
* :mod:`spiral.amp.grad_scaler`: ``GradScaler`` with ``torch.amp.GradScaler``'s semantics;
* :mod:`spiral.amp.training`: one mixed-precision training step, and gradient statistics.

Paper: Micikevicius et al. (2018), "Mixed precision training". Chapter: stage 12.
"""

from __future__ import annotations

from spiral.amp.autocast import FLOAT32_OPS, LOWER_PRECISION_OPS, PRECISIONS, autocast
from spiral.amp.formats import FORMATS, FloatFormat, bit_fields, dtype_of, format_of, round_to
from spiral.amp.grad_scaler import GradScaler

__all__ = ["FLOAT32_OPS", "FORMATS", "FloatFormat", "GradScaler", "LOWER_PRECISION_OPS",
           "PRECISIONS", "autocast", "bit_fields", "dtype_of", "format_of", "round_to"]
