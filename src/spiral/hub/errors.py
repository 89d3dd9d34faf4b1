"""The one error type of :mod:`spiral.hub`: a checkpoint we cannot read, map or fetch.

It subclasses :class:`spiral.data.DataError` (a corpus that cannot be found, fetched or
decoded), so a script that already handles missing data handles a missing model the same way.
Chapter: stage 8 (running real pretrained weights).
"""

from __future__ import annotations

from spiral.data import DataError

__all__ = ["HubError"]


class HubError(DataError):
    """A Hugging Face model folder, file or id that spiral.hub cannot read, map or fetch."""
