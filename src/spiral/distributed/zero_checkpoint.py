"""Sharded checkpoints for ZeRO: each rank writes its pieces; they merge into one model and back.

Under ZeRO no rank holds the whole model state, so each rank saves what it owns — piece r
of every parameter and of Adam's two moments — in its own safetensors file
``zero-rank{r}-of-{N}.safetensors`` (tensors ``param.<name>``, ``exp_avg.<name>``,
``exp_avg_sq.<name>``; the step count, shapes and world size in the JSON metadata). Loading
is a bounds-checked copy: no pickle, no code runs.

- :func:`consolidate` concatenates the N pieces of every array (piece r is the r-th of
  :func:`~spiral.distributed.collectives.chunk_bounds`), giving an ordinary state dict;
  :func:`load_unsharded` puts it into a plain model and ``AdamW``.
- :func:`shard` goes the other way: a plain model and ``AdamW`` written as N rank files,
  which :func:`load_sharded` reads into a ZeRO run of any N.

Chapter: stage 13 (ZeRO).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spiral.distributed.collectives import chunk_bounds
from spiral.distributed.zero import ZeroRedundancyOptimizer

__all__ = ["save_sharded", "load_sharded", "consolidate", "load_unsharded", "shard"]

FORMAT = "spiral-zero-shard"
MOMENTS = ("exp_avg", "exp_avg_sq")


def _path(directory: str | Path, rank: int, world: int) -> Path:
    return Path(directory) / f"zero-rank{rank:05d}-of-{world:05d}.safetensors"


def _write(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata={"spiral": json.dumps(meta)})


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import safe_open

    if not path.exists():
        raise FileNotFoundError(f"no shard {path.name} in {path.parent}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("spiral", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type for a corrupt header
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file")
    return tensors, meta


def save_sharded(directory: str | Path, zopt: ZeroRedundancyOptimizer) -> Path:
    """Write this rank's pieces of the parameters and Adam moments."""
    tensors: dict[str, np.ndarray] = {}
    step = 0
    for name, piece in zopt.pieces.items():
        tensors[f"param.{name}"] = piece.data
        state = zopt.inner.state.get(id(piece), {})
        step = int(state.get("step", step))
        for m in MOMENTS:
            if m in state:
                tensors[f"{m}.{name}"] = state[m]
    meta = {"format": FORMAT, "world_size": zopt.comm.size, "rank": zopt.comm.rank,
            "step": step, "shapes": {n: list(s) for n, s in zopt.shapes.items()}}
    path = _path(directory, zopt.comm.rank, zopt.comm.size)
    _write(path, tensors, meta)
    return path


def load_sharded(directory: str | Path, zopt: ZeroRedundancyOptimizer) -> int:
    """Read this rank's file into ``zopt`` (call on every rank: stages 1-2 all-gather)."""
    tensors, meta = _read(_path(directory, zopt.comm.rank, zopt.comm.size))
    for name, piece in zopt.pieces.items():
        key = f"param.{name}"
        if key not in tensors or tensors[key].shape != piece.data.shape:
            raise ValueError(f"shard lacks {key} of shape {piece.data.shape}")
        piece.data[...] = tensors[key]
        if meta["step"]:
            zopt.inner.state[id(piece)] = {"step": meta["step"], **{
                m: tensors[f"{m}.{name}"].copy() for m in MOMENTS}}
    if zopt.stage < 3:
        zopt._gather([n for n, _ in zopt.named])
    return int(meta["step"])


def consolidate(directory: str | Path) -> tuple[dict[str, np.ndarray],
                                                dict[str, dict[str, np.ndarray]], int]:
    """The full parameters, the full Adam moments by name, and the step, from all shards."""
    files = sorted(Path(directory).glob("zero-rank*-of-*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no ZeRO shards in {directory}")
    world = int(files[0].stem.split("-of-")[1])
    shards = [_read(_path(directory, r, world)) for r in range(world)]
    shapes = shards[0][1]["shapes"]
    params = {n: np.concatenate([t[f"param.{n}"] for t, _ in shards]).reshape(s)
              for n, s in shapes.items()}
    step = int(shards[0][1]["step"])
    moments = {n: {m: np.concatenate([t[f"{m}.{n}"] for t, _ in shards]).reshape(s)
                   for m in MOMENTS} for n, s in shapes.items()} if step else {}
    return params, moments, step


def _index(model: Any, optimizer: Any) -> dict[int, str]:
    names = {id(p): n for n, p in model.named_parameters()}
    order = [p for g in optimizer.param_groups for p in g["params"]]
    return {i: names[id(p)] for i, p in enumerate(order)}


def load_unsharded(directory: str | Path, model: Any, optimizer: Any) -> int:
    """Load N shards into an ordinary model and its ``AdamW``; returns the step."""
    params, moments, step = consolidate(directory)
    model.load_state_dict(params)
    sd = optimizer.state_dict()
    if step:
        sd["state"] = {i: {"step": step, **moments[n]} for i, n in _index(model, optimizer).items()}
    optimizer.load_state_dict(sd)
    return step


def shard(directory: str | Path, model: Any, optimizer: Any, world_size: int) -> list[Path]:
    """Write an ordinary model and ``AdamW`` as ``world_size`` ZeRO shards."""
    named = dict(model.named_parameters())
    state = {n: optimizer.state.get(id(p), {}) for n, p in named.items()}
    steps = {int(s.get("step", 0)) for s in state.values()}
    step = max(steps) if steps else 0
    paths = []
    for r in range(world_size):
        tensors: dict[str, np.ndarray] = {}
        for n, p in named.items():
            a, b = chunk_bounds(p.data.size, world_size)[r]
            tensors[f"param.{n}"] = p.data.reshape(-1)[a:b]
            for m in MOMENTS:
                if m in state[n]:
                    tensors[f"{m}.{n}"] = state[n][m].reshape(-1)[a:b]
        meta = {"format": FORMAT, "world_size": world_size, "rank": r, "step": step,
                "shapes": {n: list(p.data.shape) for n, p in named.items()}}
        paths.append(_path(directory, r, world_size))
        _write(paths[-1], tensors, meta)
    return paths
