"""Drawing a computational graph: one box per `Value`, with its data and its gradient.

A program's computational graph is a directed acyclic graph whose nodes are intermediate
values and whose edges say "was computed from". We lay it out in *layers*: a node's column
is the length of the longest path from a leaf to it (a leaf sits just left of its first
consumer), so every edge points right, in the direction of the forward pass, and the backward
pass reads right to left. Within a column, nodes are ordered by the mean height of their
consumers (one barycentric sweep, the classic
Sugiyama heuristic), which removes most crossings for the small graphs the book draws.
Drawn with matplotlib alone (no graphviz). Book: stage 2, "Computational graphs".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from spiral.autograd.value import Value, topological_order

LEAF_COLOR = "#dce6f2"
OP_COLOR = "#f2f2f2"
OUTPUT_COLOR = "#f8e0c8"


def layout(root: Value) -> dict[Value, tuple[float, float]]:
    """(column, row) for every node of the graph of ``root``: leaves left, output right."""
    order = topological_order(root)
    column: dict[Value, int] = {}
    consumers: dict[Value, list[Value]] = {}
    for v in order:  # parents first, so their columns are known
        column[v] = 1 + max((column[p] for p in v._prev), default=-1)
        for p in v._prev:
            consumers.setdefault(p, []).append(v)
    for v in order:  # a leaf sits just left of its first consumer, not all in column 0
        if not v._prev and v in consumers:
            column[v] = min(column[w] for w in consumers[v]) - 1
    by_column: dict[int, list[Value]] = {}
    for v in order:
        by_column.setdefault(column[v], []).append(v)
    # right to left: order each column by the mean row of its consumers (the output is at 0)
    row: dict[Value, float] = {}
    for c in sorted(by_column, reverse=True):
        nodes = by_column[c]
        nodes.sort(key=lambda v: sum(row[w] for w in consumers.get(v, ())) /
                   max(len(consumers.get(v, ())), 1))
        for i, v in enumerate(nodes):
            row[v] = i - (len(nodes) - 1) / 2
    return {v: (float(column[v]), row[v]) for v in order}


def node_text(v: Value) -> str:
    name = getattr(v, "label", "") or v._op or "leaf"
    return f"{name}\ndata {v.data + 0.0:.3g}\ngrad {v.grad + 0.0:.3g}"  # no "-0"


def draw_graph(
    root: Value,
    ax: Axes | None = None,
    *,
    title: str = "",
    x_gap: float = 1.0,
    y_gap: float = 1.0,
    fontsize: float = 6.5,
    text: Callable[[Value], str] = node_text,
) -> Figure:
    """Draw the graph that computed ``root`` with each node's data and grad; return the figure.

    ``text(v)`` gives a node's label (default: op or name, data, grad).

    >>> x = Value(2.0); y = (x * x).tanh(); y.backward()
    >>> fig = draw_graph(y)
    """
    from spiral.plotting import new_figure

    pos = layout(root)
    n_cols = 1 + int(max(c for c, _ in pos.values()))
    n_rows = 1 + max(sum(1 for c2, _ in pos.values() if c2 == c) for c in range(n_cols))
    fig: Any
    if ax is None:
        fig, ax = new_figure(width=max(3.0, 1.25 * n_cols * x_gap),
                             height=max(2.0, 0.62 * n_rows * y_gap))
    else:
        fig = ax.figure
    assert ax is not None
    w, h = 0.78 * x_gap, 0.46 * y_gap
    xy = {v: (c * x_gap, r * y_gap) for v, (c, r) in pos.items()}
    for v, (x, y) in xy.items():
        for p in v._prev:
            px, py = xy[p]
            ax.add_patch(FancyArrowPatch(
                (px + w / 2, py), (x - w / 2, y), arrowstyle="-|>", mutation_scale=7,
                color="#888888", lw=0.7, shrinkA=0, shrinkB=0, zorder=1))
    for v, (x, y) in xy.items():
        color = OUTPUT_COLOR if v is root else (OP_COLOR if v._prev else LEAF_COLOR)
        ax.add_patch(FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
            facecolor=color, edgecolor="#555555", lw=0.6, zorder=2))
        ax.text(x, y, text(v), ha="center", va="center", fontsize=fontsize, zorder=3,
                linespacing=1.15)
    xs = [x for x, _ in xy.values()]
    ys = [y for _, y in xy.values()]
    ax.set_xlim(min(xs) - w, max(xs) + w)
    ax.set_ylim(min(ys) - h, max(ys) + h)
    ax.set_aspect("auto")
    ax.axis("off")
    if title:
        ax.set_title(title, loc="left")
    return fig
