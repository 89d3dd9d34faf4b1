"""Reading safetensors checkpoints tensor by tensor, without pickle and without a second copy.

A ``.safetensors`` file is

    [8 bytes: n, little-endian u64] [n bytes: JSON header] [data bytes]

where the header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the start of the data) and ``end - begin = prod(shape) · itemsize``.
Nothing in it can run code. :class:`SafetensorsFile` checks every one of those facts before
handing out a tensor, so a truncated or corrupted file is one clear :class:`HubError`; tensors
are views of a read-only memory map (the file's pages, not a copy on the heap) until the
caller copies them into its own parameters, so loading holds one tensor's worth of extra
memory at a time, never a second model. bfloat16 (most Llama-family checkpoints) widens to
float32 exactly: its 16 bits are the top half of a float32. A sharded checkpoint is several
files plus ``model.safetensors.index.json`` (``{"weight_map": {name: file}}``): :class:`Checkpoint`.
Format: https://github.com/huggingface/safetensors. Chapter: stage 8 (real weights).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spiral.hub.errors import HubError

__all__ = ["SafetensorsFile", "Checkpoint", "INDEX", "SINGLE"]

INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"
DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("u1")}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


class SafetensorsFile:
    """One ``.safetensors`` file: ``names()``, ``shape(name)``, ``get(name)`` (a float32 view
    or converted array) -- every header fact is checked against the file's size on open."""

    def __init__(self, path: str | Path) -> None:
        self.path = p = Path(path)
        if not p.is_file():
            raise HubError(f"{p}: safetensors file not found")
        size = p.stat().st_size
        bad = f"{p} is not a valid safetensors file (truncated or corrupt?)"
        if size < 8:
            raise HubError(f"{bad}: {size} bytes, shorter than the 8-byte header length")
        with p.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > MAX_HEADER or 8 + n > size:
                raise HubError(f"{bad}: header of {n} bytes does not fit in {size} bytes")
            raw = f.read(n)
        try:
            header: dict[str, Any] = json.loads(raw.decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except (UnicodeDecodeError, ValueError) as err:
            raise HubError(f"{bad}: unreadable header ({err})") from None
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.start, data_len = 8 + n, size - 8 - n
        self.entries: dict[str, tuple[np.dtype[Any], tuple[int, ...], int, int, str]] = {}
        for name, e in header.items():
            try:
                code, shape = e["dtype"], tuple(int(s) for s in e["shape"])
                begin, end = (int(o) for o in e["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise HubError(f"{bad}: malformed header entry for {name!r}") from None
            if code not in DTYPES:
                raise HubError(f"{p}: tensor {name!r} has dtype {code}, which spiral.hub does "
                               f"not read (supported: {', '.join(DTYPES)})")
            dt = DTYPES[code]
            if not 0 <= begin <= end or end - begin != math.prod(shape) * dt.itemsize:
                raise HubError(f"{bad}: tensor {name!r} has offsets [{begin}, {end}) that do "
                               f"not match its shape {list(shape)} of {code}")
            if end > data_len:
                raise HubError(f"{bad}: tensor {name!r} ends at byte {end} of the data but "
                               f"the file holds only {data_len} data bytes")
            self.entries[name] = (dt, shape, begin, end, code)
        self._map: np.memmap[Any, Any] | None = None

    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def raw(self, name: str) -> np.ndarray:
        """The tensor as stored, a read-only view of the memory-mapped file."""
        dt, shape, begin, end, _ = self.entries[name]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map[self.start + begin:self.start + end].view(dt).reshape(shape)

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32: a view for F32, a converted copy for F16/BF16/F64."""
        if name not in self.entries:
            raise HubError(f"{self.path}: no tensor named {name!r}")
        x, code = self.raw(name), self.entries[name][4]
        if code == "BF16":  # bfloat16 = the top 16 bits of a float32
            return (x.astype(np.uint32) << 16).view(np.float32)
        return x if code == "F32" else x.astype(np.float32)


class Checkpoint:
    """All the tensors of a model folder: one ``model.safetensors`` or shards named by the index."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = d = Path(folder)
        index = d / INDEX
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, str] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                items = {str(k): str(v) for k, v in weight_map.items()}
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise HubError(f"{index} is not a safetensors index ({err})") from None
            missing = sorted({f for f in items.values() if not (d / f).is_file()})
            if missing:
                raise HubError(f"{d}: shard {missing[0]} named in {INDEX} is missing "
                               f"({len(missing)} of {len(set(items.values()))} shards missing)")
            for f in sorted(set(items.values())):
                self.files[f] = SafetensorsFile(d / f)
            for name, f in items.items():
                if name not in self.files[f].entries:
                    raise HubError(f"{d / f}: {INDEX} says it holds {name!r}, but it does not")
                self.where[name] = f
        elif (d / SINGLE).is_file():
            self.files[SINGLE] = SafetensorsFile(d / SINGLE)
            self.where = {n: SINGLE for n in self.files[SINGLE].names()}
        else:
            found = sorted(p.name for p in d.glob("*.bin")) if d.is_dir() else []
            extra = (f" (found {found[0]}: pickle-based weights, which spiral.hub never loads "
                     "because unpickling can run code)") if found else ""
            raise HubError(f"{d} has neither {SINGLE} nor {INDEX}{extra}")

    def names(self) -> list[str]:
        return list(self.where)

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def shape(self, name: str) -> tuple[int, ...]:
        return self.files[self.where[name]].shape(name)

    def get(self, name: str) -> np.ndarray:
        if name not in self.where:
            raise HubError(f"{self.folder}: the checkpoint has no tensor {name!r}")
        return self.files[self.where[name]].get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.where)
