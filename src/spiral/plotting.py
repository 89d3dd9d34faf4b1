"""The house style for every figure in the book (Tufte: high data-ink, direct labels).

Figures are saved deterministically: a fixed style, fixed DPI, the Agg backend, and no
timestamps or software tags in the PNG metadata, so that a diff of a committed figure
shows a real change.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.rcsetup import cycler

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PALETTE = ["#1f4e79", "#c0504d", "#4f8a3c", "#8064a2", "#d9822b", "#2e8b8b", "#7f7f7f"]

RC: Any = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#444444",
    "axes.linewidth": 0.8,
    "axes.grid": False,
    "axes.prop_cycle": cycler(color=PALETTE),
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "xtick.direction": "out",
    "ytick.direction": "out",
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "figure.dpi": 100,
    "savefig.dpi": 130,
    "savefig.bbox": "tight",
    "image.cmap": "viridis",
    "svg.hashsalt": "spiral",
}


def new_figure(
    nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 3.6, **kw: Any
) -> tuple[Figure, Any]:
    """A figure and its axes in the house style."""
    with plt.rc_context(RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), **kw)
    fig.set_layout_engine("constrained")
    return fig, axes


def style_axes(ax: Axes) -> None:
    """Apply the house style to axes created elsewhere."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(colors="#444444")


def direct_label(
    ax: Axes, x: Sequence[float], y: Sequence[float], text: str, *, color: str | None = None,
    dx: float = 4, dy: float = 0,
) -> None:
    """Label a line at its last point instead of using a legend."""
    ax.annotate(
        text, xy=(x[-1], y[-1]), xytext=(dx, dy), textcoords="offset points",
        va="center", ha="left", fontsize=8, color=color or "#222222",
    )


def figure_png(fig: Figure) -> bytes:
    """The figure as deterministic PNG bytes (no metadata), in the house style."""
    buf = io.BytesIO()
    with plt.rc_context(RC):
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a deterministic PNG (no metadata), atomically, and close it."""
    from spiral.records import atomic_write_bytes

    path = Path(path)
    try:
        atomic_write_bytes(path, figure_png(fig))
    finally:
        plt.close(fig)
    return path
