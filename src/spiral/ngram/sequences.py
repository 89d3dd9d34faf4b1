"""How data become token streams for the n-gram models: the stage-1 data conventions.

Data are one continuous sequence (a ``str`` or 1-D integer ids: its first ``order - 1``
tokens are context only) or an iterable of sequences such as names (each padded with
``order - 1`` begin markers and one end marker, which is scored). The marker is one symbol,
``"\\n"`` for characters (makemore's ``.``) and ``-1`` for integer ids. Padding is
vectorised: no Python loop per token. Chapter: stages/stage-01-ngrams.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

BOUNDARY = {"char": ord("\n"), "int": -1}
Data = str | np.ndarray | Iterable[Any]


def parse(data: Data) -> tuple[str, np.ndarray, np.ndarray | None]:
    """data -> (kind 'char'|'int', raw symbols concatenated (N,), lengths (S,) or None)."""
    if isinstance(data, str):
        return "char", codepoints(data), None
    if isinstance(data, np.ndarray):
        if data.ndim != 1 or not np.issubdtype(data.dtype, np.integer):
            raise TypeError(f"an array of ids must be 1-D integers, got {data.dtype} {data.shape}")
        return "int", data.astype(np.int64), None
    items = list(data)
    if items and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in items):
        return "int", np.asarray(items, dtype=np.int64), None
    if items and all(isinstance(x, str) for x in items):
        lengths = np.array([len(x) for x in items], dtype=np.int64)
        return "char", codepoints("".join(items)), lengths
    if items and all(isinstance(x, (list, tuple, np.ndarray)) for x in items):
        arrays = [np.asarray(x, dtype=np.int64).reshape(-1) for x in items]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        return "int", np.concatenate(arrays), lengths
    if not items:
        raise ValueError("empty data: need at least one token")
    raise TypeError(
        "data must be a str, 1-D integer ids, or an iterable of sequences (str or ids), "
        f"got items of type {type(items[0]).__name__}"
    )


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def pad(
    kind: str, raw: np.ndarray, lengths: np.ndarray | None, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw symbols -> (stream (L,), scored (L,)): sequences get order-1 begin markers and one
    end marker each (vectorised, no loop per sequence); a continuous stream is left as is."""
    n = order
    if lengths is None:
        if len(raw) == 0:
            raise ValueError("empty data: need at least one token")
        scored = np.ones(len(raw), dtype=bool)
        scored[: n - 1] = False  # the first n - 1 tokens are context only
        return raw, scored
    if np.any(raw == BOUNDARY[kind]):
        raise ValueError(f"sequences may not contain the boundary marker {BOUNDARY[kind]!r}")
    padded = lengths + n  # (S,) per sequence: n - 1 begin markers + tokens + 1 end marker
    starts = np.concatenate([[0], np.cumsum(padded)[:-1]])
    out = np.full(int(padded.sum()), BOUNDARY[kind], dtype=np.int64)
    seq_of = np.repeat(np.arange(len(lengths)), lengths)  # (N,) sequence of each token
    offset = np.arange(len(raw)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    dest = starts[seq_of] + (n - 1) + offset
    out[dest] = raw
    scored = np.zeros(len(out), dtype=bool)
    scored[dest] = True
    scored[starts + n - 1 + lengths] = True  # the end marker is scored
    return out, scored

