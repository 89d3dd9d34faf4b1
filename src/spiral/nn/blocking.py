"""Cache blocking: run an array kernel piece by piece so its temporaries stay in cache.

A NumPy expression such as ``1 - poly(t) * exp(-z²)`` runs as a dozen ufunc calls, each a
full pass over its operands. On a (B·T, 4·d_model) activation of 100 MB every pass streams
the array through main memory, and every temporary is a fresh allocation whose pages the
kernel faults in on first touch. Run the SAME calls on blocks of ``BLOCK`` elements and
the operands and temporaries of one block (a few hundred kB) stay in the core's cache:
the work per element, and so every result bit, is unchanged; only memory traffic drops.
Two shapes of blocking serve the kernels of :mod:`spiral.nn.kernels`:

* :func:`flat_blocks` — elementwise ops (GELU): slices of a flattened array;
* :func:`batch_blocks` — per-head ops (attention): index tuples over leading batch axes,
  with :func:`pick` to take one block of an operand that may broadcast on those axes.

Chapter: stage 3 (the fused kernels' cost), measured by ``benchmarks/bench_gpt.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["BLOCK", "WHOLE", "flat_blocks", "batch_blocks", "pick"]

BLOCK = 1 << 15
"""Elements per block: 128 kB in float32, so a kernel's handful of block-sized operands and
temporaries fit a core's L2 cache (512 kB–1 MB on current x86 server cores)."""

WHOLE = 1 << 20
"""Arrays of at most this many elements (4 MB in float32) run as one block: they stay in
the last-level cache anyway, and the Python loop over blocks would cost more than it saves
(measured on the baby preset)."""


def flat_blocks(n: int, block: int = BLOCK) -> Iterator[slice]:
    """Consecutive slices covering range(n), each at most ``block`` long (one slice when
    n <= :data:`WHOLE`).

    >>> [(b.start, b.stop) for b in flat_blocks(WHOLE + 5, WHOLE // 2)]
    [(0, 524288), (524288, 1048576), (1048576, 1048581)]
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if n <= max(block, WHOLE):
        yield slice(0, n)
        return
    for start in range(0, n, block):
        yield slice(start, min(start + block, n))


def batch_blocks(lead: tuple[int, ...], per_item: int, block: int = BLOCK
                 ) -> list[tuple[Any, ...]]:
    """Index tuples that cut the leading batch axes ``lead`` into blocks of about ``block``
    elements when each batch item holds ``per_item``: integers over the outer axes, then a
    slice of the next axis (one block is everything the tuple leaves open); ``[()]``, the
    whole array, when it holds at most :data:`WHOLE` elements.

    >>> batch_blocks((2, 3), WHOLE // 2, block=WHOLE // 2)[:2]
    [(0, slice(0, 1, None)), (0, slice(1, 2, None))]
    >>> batch_blocks((2, 3), 100, block=200)
    [()]
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    d, below = 0, int(np.prod(lead, dtype=np.int64)) * per_item  # elements under axis d
    if below <= WHOLE:
        return [()]
    while d < len(lead) and below > block:
        below //= max(lead[d], 1)
        d += 1
    if d == 0:
        return [()]
    step, n = max(1, block // max(below, 1)), lead[d - 1]  # items of axis d-1 per block
    return [(*i, slice(s, min(s + step, n)))
            for i in np.ndindex(*lead[:d - 1]) for s in range(0, n, step)]


def pick(a: Any, idx: tuple[Any, ...], n_lead: int, core: int = 2) -> Any:
    """The block of ``a`` at ``idx`` (a :func:`batch_blocks` tuple over the first len(idx)
    of ``n_lead`` batch axes), where ``a`` has ``core`` trailing non-batch axes and
    broadcasts against the batch shape NumPy's way: missing leading axes and size-1 axes are
    shared by every block.

    >>> pick(np.zeros((1, 3, 4, 5)), (1, slice(0, 2)), n_lead=2).shape
    (2, 4, 5)
    """
    if a is None or a.ndim <= core:
        return a
    off = n_lead - (a.ndim - core)  # batch axes that ``a`` lacks on the left
    sel = tuple(i if a.shape[j - off] != 1 else (0 if isinstance(i, int) else slice(0, 1))
                for j, i in enumerate(idx) if j >= off)
    return a[sel]
