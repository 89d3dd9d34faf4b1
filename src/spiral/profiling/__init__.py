"""spiral.profiling: measured cost of the library's operations, next to their predictions.

- ``attention.py`` (stage 7): time and peak memory of attention against sequence length,
  against the O(n²·d) time and O(n²) memory derivations.

Stage 11 adds the allocation-level memory profiler here.
"""

from __future__ import annotations

__all__: list[str] = []
