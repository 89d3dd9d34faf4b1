"""Saving and loading a quantized model as safetensors (no pickle: loading runs no code).

The file holds the model's ``state_dict`` — float parameters, and for every ``QuantLinear``
its integer codes (INT4 packed two per byte), scales, zero points and bias — plus JSON
metadata under the key ``spiral.quant``: each quantized layer's configuration and the
SHA-256 of every tensor's bytes, so that a flipped byte in the data (which safetensors'
header checks cannot see) is reported as corruption instead of silently loading.
Chapter: stage 18.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from spiral.nn.module import Module
from spiral.quant.linear import QuantLinear, _set_submodule
from spiral.quant.uniform import QTensor, unpack_int4

FORMAT, VERSION = "spiral.quant", 1


class QuantFileError(ValueError):
    """A quantized-weights file that is missing, truncated, corrupt or does not fit."""


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def save_quantized(model: Module, path: str | Path) -> None:
    """Write ``model`` (after :func:`quantize_model`) to ``path``."""
    from safetensors.numpy import save_file

    state = {k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    layers = {n: m.config() for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    header = {"format": FORMAT, "version": VERSION, "layers": layers,
              "sha256": {k: _digest(v) for k, v in state.items()}}
    save_file(state, str(path), metadata={FORMAT: json.dumps(header)})


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import safe_open

    if not path.is_file():
        raise QuantFileError(f"no quantized-weights file at {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own types for bad headers and sizes
        raise QuantFileError(f"{path} is not a readable safetensors file (truncated or "
                             f"corrupt?): {e}") from e
    if FORMAT not in metadata:
        raise QuantFileError(f"{path} has no '{FORMAT}' metadata: not a quantized spiral model")
    try:
        header = json.loads(metadata[FORMAT])
    except json.JSONDecodeError as e:
        raise QuantFileError(f"{path}: the '{FORMAT}' metadata is not valid JSON: {e}") from e
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise QuantFileError(f"{path}: unsupported format {header.get('format')!r} "
                             f"version {header.get('version')!r}")
    sums = header.get("sha256", {})
    for k, v in arrays.items():
        if sums.get(k) != _digest(v):
            raise QuantFileError(f"{path}: tensor {k!r} fails its SHA-256 check (corrupt file)")
    return arrays, header


def load_quantized(model: Module, path: str | Path) -> list[str]:
    """Rebuild the quantized layers of a float ``model`` of the same shape from ``path``.

    Returns the names of the layers made quantized; every other array is copied in as well.
    """
    path = Path(path)
    arrays, header = _read(path)
    modules = dict(model.named_modules())
    built: dict[str, QuantLinear] = {}
    for name, cfg in header["layers"].items():
        if name not in modules:
            raise QuantFileError(f"{path}: layer {name!r} does not exist in this model")
        try:
            rows_shape = tuple(cfg["rows_shape"])
            stored = arrays[f"{name}.qweight"]
            n = int(np.prod(rows_shape))
            codes = (unpack_int4(stored, n, cfg["symmetric"]) if cfg["bits"] <= 4
                     else stored).reshape(rows_shape)
            scale = arrays[f"{name}.scale"]
            zp = (np.zeros(scale.shape, np.int32) if cfg["symmetric"]
                  else arrays[f"{name}.zero_point"].astype(np.int32))
            q = QTensor(codes, scale, zp,
                        cfg["bits"], cfg["symmetric"], cfg["granularity"], tuple(cfg["shape"]))
            built[name] = QuantLinear(q, arrays.get(f"{name}.qbias"), cfg["act_bits"],
                                      dtype=arrays[f"{name}.scale"].dtype)
        except (KeyError, ValueError, TypeError) as e:
            raise QuantFileError(f"{path}: quantized layer {name!r} is incomplete or "
                                 f"malformed: {e}") from e
    for name, layer in built.items():
        _set_submodule(model, name, layer)
    try:
        model.load_state_dict(arrays)
    except (KeyError, ValueError, RuntimeError) as e:
        for name in built:  # leave the model as it was
            _set_submodule(model, name, modules[name])
        raise QuantFileError(f"{path} does not fit this model: {e}") from e
    return list(built)
