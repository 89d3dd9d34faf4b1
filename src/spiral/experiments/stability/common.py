"""Shared helpers of the stage-6 experiments (no ``EXPERIMENT`` here).

``spread_labels`` places direct labels at the ends of lines, nudged apart so none overlap.
``single_thread`` pins BLAS to one thread while an experiment runs. On a shared two-core
machine a multi-threaded GEMM oversubscribes the cores and ran ~10x slower than one thread
(measured: 50 layers of a 64 x 256 batch, 4.4 s vs 0.44 s; see the stage-6 lab notes).
Chapter: stage 6 (training stability).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to one thread inside the block (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the test extra
        yield
        return
    with threadpool_limits(limits=1):
        yield


def spread_labels(ax: Any, ends: list[tuple[float, float, str, str]], gap_pt: float = 9) -> None:
    """Direct labels at the lines' last points, nudged apart vertically so none overlap."""
    from spiral.plotting import direct_label

    ax.autoscale_view()
    fig = ax.figure
    to_pt = 72.0 / fig.dpi
    ys = [ax.transData.transform((x, y))[1] * to_pt for x, y, _, _ in ends]
    order = np.argsort(ys)
    placed: list[float] = []
    for i in order:
        target = ys[i] if not placed else max(ys[i], placed[-1] + gap_pt)
        placed.append(target)
        x, y, text, color = ends[i]
        direct_label(ax, [x], [y], text, color=color, dy=target - ys[i])
