"""RoPE as rotations: each 2-D pair turns by m·θ_i at position m.

We draw, for a fast, a middle and a slow pair of a 64-wide head, the same 2-D vector
rotated to positions 0..N (points on a circle), and the angle m·θ_i against position. We
then measure the relative-position property on random q, k: the score
⟨R(m) q, R(n) k⟩ for many (m, n) with the same offset, and the largest spread (zero up to
rounding, as the chapter derives). Finally the score of q = k = (1, ..., 1) against the
offset, the "long-term decay" curve of Su et al. (2021), to see how far it decays and how
much it oscillates. Chapter: stage 9 ("Rotary position embeddings").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spiral.autograd import Tensor
from spiral.experiments.framework import Experiment
from spiral.nn.positional import apply_rope, rope_complex, rope_frequencies
from spiral.plotting import PALETTE, direct_label, new_figure


@dataclass(frozen=True)
class Config:
    head_dim: int = 64
    base: float = 10000.0
    positions: int = 24         # points drawn on each circle
    pairs: tuple[int, ...] = (0, 8, 24)
    offsets: tuple[int, ...] = (0, 1, 5, 50, 500)
    n_pairs_per_offset: int = 200
    decay_max_offset: int = 2048


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    d, base = config.head_dim, config.base
    theta = rope_frequencies(d, base)
    ms = np.arange(config.positions)
    circles = {str(i): {"theta": float(theta[i]),
                        "x": np.cos(ms * theta[i]).tolist(), "y": np.sin(ms * theta[i]).tolist()}
               for i in config.pairs}
    q, k = rng.standard_normal(d), rng.standard_normal(d)
    spread: dict[str, float] = {}
    for off in config.offsets:
        m = rng.integers(0, 100_000, config.n_pairs_per_offset)
        qm = apply_rope(Tensor(np.tile(q, (len(m), 1))), m, base=base).data  # (P, d)
        kn = apply_rope(Tensor(np.tile(k, (len(m), 1))), m - off, base=base).data
        s = np.einsum("pd,pd->p", qm, kn)
        spread[str(off)] = float(s.max() - s.min())
    pos = rng.integers(0, 100_000, 64)
    x = rng.standard_normal((64, d))
    complex_err = float(np.abs(apply_rope(Tensor(x), pos, base=base).data
                               - rope_complex(x, pos, base)).max())
    offs = np.arange(config.decay_max_offset + 1)
    decay = np.cos(offs[:, None] * theta[None, :]).sum(1) * 2  # ⟨R(m)1, R(m-r)1⟩
    return {"circles": circles, "theta": theta.tolist(), "head_dim": d,
            "score_spread": spread, "score_spread_max": max(spread.values()),
            "complex_max_error": complex_err, "decay": decay.tolist(),
            "decay_at_0": float(decay[0]),
            "decay_max_abs_over_last_half": float(np.abs(decay[len(decay) // 2:]).max()),
            "fastest_period": float(2 * np.pi / theta[0]),
            "slowest_period": float(2 * np.pi / theta[-1])}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    circles = results["circles"]
    fig, axes = new_figure(1, len(circles) + 1, width=8.4, height=2.8)
    for ax, (i, c), color in zip(axes, circles.items(), PALETTE):
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="#dddddd", lw=0.8)
        ax.scatter(c["x"], c["y"], s=np.linspace(4, 20, len(c["x"])), color=color, zorder=3)
        last = len(c["x"]) - 1
        labelled: list[tuple[float, float]] = []
        for m in (0, 1, 2, last):
            xy = (c["x"][m], c["y"][m])
            near = any(np.hypot(xy[0] - u, xy[1] - v) < 0.2 for u, v in labelled)
            if near and m != last:
                continue  # a neighbour's label already sits here
            # labels sit radially outside the circle, clear of the dots; the last position
            # goes inside when it lands on a point that is already labelled
            r = (-1.0 if near else 1.0) * 9.0 / max(float(np.hypot(*xy)), 1e-9)
            ax.annotate(str(m), xy, xytext=(r * xy[0], r * xy[1]), textcoords="offset points",
                        fontsize=7, color="#444444", ha="center", va="center")
            labelled.append(xy)
        ax.set_aspect("equal")
        ax.set_xlim(-1.4, 1.4)
        ax.set_ylim(-1.4, 1.4)
        ax.set_title(f"pair {i}: θ = {c['theta']:.3g}")
        ax.set_axis_off()
    ax = axes[-1]
    n = len(next(iter(circles.values()))["x"])
    for (i, c), color in zip(circles.items(), PALETTE):
        ang = np.arange(n) * c["theta"]
        ax.plot(np.arange(n), ang, color=color, lw=1.2)
        direct_label(ax, list(range(n)), list(ang), f"pair {i}", color=color)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlabel("position m")
    ax.set_ylabel("angle m·θ (rad)")
    fig2, ax2 = new_figure(width=6.4, height=3.2)
    decay = results["decay"]
    ax2.plot(range(len(decay)), decay, color=PALETTE[0], lw=0.8)
    ax2.set_xscale("symlog", linthresh=1)
    ax2.set_xlabel("relative offset m − n")
    ax2.set_ylabel("⟨R(m)·1, R(n)·1⟩")
    return {"rotations": fig, "decay": fig2}


def check(results: dict[str, Any]) -> None:
    assert results["score_spread_max"] < 1e-8      # the score depends on m - n only
    assert results["complex_max_error"] < 1e-8     # rotation = complex multiplication
    assert abs(results["decay_at_0"] - results["head_dim"]) < 1e-9
    assert results["decay_max_abs_over_last_half"] < results["decay_at_0"]
    theta = np.asarray(results["theta"])
    assert theta[0] == 1.0 and np.all(np.diff(theta) < 0)


EXPERIMENT = Experiment(
    name="positional_rope_rotations", stage=9, title="RoPE as rotations",
    quick=Config(head_dim=16, pairs=(0, 3, 7), n_pairs_per_offset=20, decay_max_offset=256),
    full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [("max score spread at fixed offset", f"{r['score_spread_max']:.1e}"),
                       ("complex-form error", f"{r['complex_max_error']:.1e}")],
)
