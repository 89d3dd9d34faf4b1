"""The float formats side by side: bit layouts, ranges and precision, derived and checked.

For float32, float16, bfloat16 and the two float8 formats: the sign / exponent / mantissa
bit counts, the largest finite value, the smallest normal and subnormal values, machine
epsilon and decimal digits — each derived from the layout by
:class:`spiral.amp.formats.FloatFormat` and compared with ``np.finfo`` / ``ml_dtypes.finfo``
— and the bits of a few sample values (1, 0.1, 65504, 1e-5). The figure draws each layout and
each format's range on a log₂ axis. Chapter: stage 12 (memory optimization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from spiral.amp.formats import FORMATS, bit_fields, format_of, round_to
from spiral.experiments.framework import Experiment
from spiral.plotting import PALETTE, new_figure


@dataclass(frozen=True)
class Config:
    samples: tuple[float, ...] = (1.0, 0.1, 65504.0, 1e-5, 3.0e38)


def _finfo(name: str) -> Any:
    if name in ("float32", "float16"):
        return np.finfo(name)
    return ml_dtypes.finfo(getattr(ml_dtypes, name))


def run(config: Config, rng: np.random.Generator) -> dict[str, Any]:
    rows = []
    for name in FORMATS:
        f, ref = format_of(name), _finfo(name)
        derived = {"max": f.max, "smallest_normal": f.smallest_normal,
                   "smallest_subnormal": f.smallest_subnormal, "eps": f.eps}
        rows.append({"format": name, "bits": f.bits, "exponent_bits": f.exponent_bits,
                     "mantissa_bits": f.mantissa_bits, "bias": f.bias, **derived,
                     "decimal_digits": f.decimal_digits,
                     "log2_range": float(np.log2(f.max / f.smallest_subnormal)),
                     "matches_finfo": all(v == float(getattr(ref, k)) for k, v in
                                          derived.items()),
                     "samples": [{"value": x, "bits": bit_fields(x, name),
                                  "stored": float(round_to(np.array([x]), name)[0])}
                                 for x in config.samples]})
    table = {"columns": ["format", "sign + exponent + mantissa", "largest", "smallest normal",
                         "smallest subnormal", "eps = 2^-m", "decimal digits"],
             "rows": [[r["format"], f"1 + {r['exponent_bits']} + {r['mantissa_bits']}",
                       f"{r['max']:.4g}", f"{r['smallest_normal']:.3g}",
                       f"{r['smallest_subnormal']:.3g}", f"{r['eps']:.3g}",
                       f"{r['decimal_digits']:.1f}"] for r in rows]}
    return {"formats": rows, "table": table,
            "all_match": all(r["matches_finfo"] for r in rows)}


def plot(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["formats"]
    fig, (ax, bx) = new_figure(1, 2, width=11.0, height=3.0)
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        e, m = r["exponent_bits"], r["mantissa_bits"]
        ax.barh(y, 1, left=0, color=PALETTE[1])
        ax.barh(y, e, left=1, color=PALETTE[0])
        ax.barh(y, m, left=1 + e, color=PALETTE[2])
        ax.text(r["bits"] + 0.5, y, f"{r['format']}  (1 + {e} + {m})", va="center", fontsize=8)
        lo, mid, hi = (np.log2(r["smallest_subnormal"]), np.log2(r["smallest_normal"]),
                       np.log2(r["max"]))
        bx.plot([lo, mid], [y, y], color=PALETTE[6], lw=4, solid_capstyle="butt")
        bx.plot([mid, hi], [y, y], color=PALETTE[0], lw=4, solid_capstyle="butt")
        bx.text(hi + 3, y, r["format"], va="center", fontsize=8)
    ax.set_xlim(0, 46)
    ax.set_yticks([])
    ax.set_xlabel("bits: sign (red), exponent (blue), mantissa (green)")
    bx.set_yticks([])
    bx.set_xlim(-160, 170)
    bx.set_xlabel("log₂ |x|: subnormal (grey) and normal (blue) ranges")
    return {"float_formats": fig}


def check(results: dict[str, Any]) -> None:
    assert results["all_match"]
    f16 = next(r for r in results["formats"] if r["format"] == "float16")
    assert f16["samples"][2]["stored"] == 65504.0  # float16's max is exact


EXPERIMENT = Experiment(
    name="memopt_formats", stage=12, title="Float formats: layout, range, precision",
    quick=Config(), full=Config(), run=run, plot=plot, check=check,
    summary=lambda r: [(x["format"], x["decimal_digits"]) for x in r["formats"]],
)
