"""Checkpoints: model + optimizer + step + RNG state + config in one safetensors file.

Why safetensors and not pickle: a pickle runs arbitrary code when loaded; a safetensors file
is a JSON header (names, dtypes, shapes, byte offsets, string metadata) followed by raw
little-endian bytes, so loading is a bounds-checked copy. Arrays are stored as
``model.<name>`` and ``optim.<param index>.<state name>``; everything else (step, the
generator's bit state, optimizer hyperparameters and scalar state, the run's config, the
metrics history, a float16 run's loss scale and growth tracker) goes into the metadata as
one JSON string under ``"spiral"``.

Writes are atomic: the file is written to a temporary name in the same folder, flushed to
disk, then renamed over the target with ``os.replace`` — a crash mid-save leaves the
previous checkpoint intact. Restoring the generator state *in place* (``rng.bit_generator.
state = ...``) keeps every module that shares that generator (dropout) in step, which is
what makes a resumed run bit-identical to an uninterrupted one.
Chapter: stage 4 (the training toolkit).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "spiral-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A file that is not a readable spiral checkpoint (truncated, foreign, or mismatched)."""


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def save(path: str | Path, model: Any, optimizer: Any = None, *, step: int = 0,
         rng: np.random.Generator | None = None, meta: dict[str, Any] | None = None,
         history: list[dict[str, Any]] | None = None, scaler: Any = None,
         pending_losses: list[float] | None = None) -> Path:
    """Write a checkpoint atomically; returns the path. ``scaler`` (a
    :class:`~spiral.amp.GradScaler`) stores its ``state_dict()`` when it is enabled;
    ``pending_losses`` (the step losses since the last evaluation, which that evaluation will
    average) go in as the array ``train.pending_losses``, exactly."""
    from safetensors.numpy import save_file

    path = Path(path)
    tensors: dict[str, np.ndarray] = {
        f"model.{k}": np.ascontiguousarray(v) for k, v in model.state_dict().items()
    }
    optim_meta: dict[str, Any] | None = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in sd["state"].items():
            for name, value in st.items():
                if isinstance(value, np.ndarray):
                    tensors[f"optim.{idx}.{name}"] = np.ascontiguousarray(value)
                else:
                    scalars.setdefault(str(idx), {})[name] = _jsonable(value)
        optim_meta = {"type": type(optimizer).__name__, "param_groups": _jsonable(
            sd["param_groups"]), "scalars": scalars}
    if pending_losses:
        tensors["train.pending_losses"] = np.asarray(pending_losses, dtype=np.float64)
    header = {
        "format": FORMAT, "version": VERSION, "step": int(step),
        "rng": _jsonable(rng.bit_generator.state) if rng is not None else None,
        "optimizer": optim_meta, "meta": _jsonable(meta or {}),
        "history": _jsonable(history or []),
        "scaler": _jsonable(scaler.state_dict() or None) if scaler is not None else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"spiral": json.dumps(header)})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        from spiral.records import default_file_mode

        os.chmod(tmp, default_file_mode())  # mkstemp's 0600 would hide the file from others
        os.replace(tmp, path)  # atomic on POSIX and Windows
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a checkpoint (step, config meta, history) without its arrays."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        return dict(json.loads(metadata["spiral"]))
    except Exception:  # not readable here: read() names the precise problem
        return read(path)[1]


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, header) of a checkpoint, or a clear :class:`CheckpointError`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        arrays: dict[str, np.ndarray] = {}
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                arrays[key] = f.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for bad headers/sizes
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {e}"
        ) from e
    if "spiral" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a spiral checkpoint "
                              "(no 'spiral' metadata)")
    try:
        header = json.loads(metadata["spiral"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the checkpoint header is not valid JSON: {e}") from e
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format "
                              f"{header.get('format')!r} version {header.get('version')!r}")
    return arrays, header


def load(path: str | Path, model: Any, optimizer: Any = None,
         rng: np.random.Generator | None = None, scaler: Any = None) -> dict[str, Any]:
    """Restore model (strict), optimizer, rng and loss scaler (in place) from ``path``;
    returns the header. A ``scaler`` is checked against the file with :func:`load_scaler`."""
    arrays, header = read(path)
    model_sd = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit this model: {e}") from e
    if optimizer is not None:
        om = header.get("optimizer")
        if om is None:
            raise CheckpointError(f"{path} holds no optimizer state")
        if om["type"] != type(optimizer).__name__:
            raise CheckpointError(f"{path} holds {om['type']} state, not "
                                  f"{type(optimizer).__name__}")
        state: dict[int, dict[str, Any]] = {}
        for key, value in arrays.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, sc in om["scalars"].items():
            state.setdefault(int(idx), {}).update(sc)
        optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    if rng is not None:
        if header.get("rng") is None:
            raise CheckpointError(f"{path} holds no generator state")
        rng.bit_generator.state = header["rng"]
    if scaler is not None:
        load_scaler(scaler, header.get("scaler"), str(path))
    out = dict(header)
    if "train.pending_losses" in arrays:
        out["pending_losses"] = [float(x) for x in arrays["train.pending_losses"]]
    return out


def load_scaler(scaler: Any, saved: dict[str, Any] | None, where: str = "the checkpoint"
                ) -> None:
    """Restore a GradScaler from ``saved`` (a checkpoint's ``"scaler"`` entry), refusing a
    mismatch: a float16 run's scale and growth tracker are part of its state (a fresh scale
    of 2^16 would skip steps and change every later update), and a run without loss scaling
    cannot take them over silently."""
    if scaler.is_enabled() and not saved:
        raise CheckpointError(
            f"{where} holds no loss-scaler state (it was saved by a float32 or bfloat16 run, "
            "or by a version before stage 12), so a float16 run cannot continue it exactly; "
            "resume it with the precision it was trained with, or start a new run from its "
            "weights (spiral.checkpoint.load(path, model))")
    if not scaler.is_enabled() and saved:
        raise CheckpointError(
            f"{where} was saved by a float16 run with loss scaling (scale "
            f"{saved.get('scale')!r}); continuing it without a GradScaler would change the "
            "run; resume it with precision 'float16', or start a new run from its weights "
            "(spiral.checkpoint.load(path, model))")
    if saved:
        scaler.load_state_dict(saved)
