"""Experiments: a config, a pure ``run``, a ``plot``, and a ``check`` of the chapter's claim.

Every figure and every number in the book comes from an :class:`Experiment`. Running one
writes ``<out>/<name>/results.json`` (with provenance: config hash, seed, git SHA, library
versions, wall time) and one PNG per figure, drawn deterministically in the house style.
The full variants' outputs are committed under ``docs/results/`` and read by the chapter
macros (:mod:`spiral.book`); the quick variants run in the test suite, where ``check``
turns each into a test of the claim the chapter makes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import pkgutil
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Results = dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    """One experiment of one stage. See CONTRIBUTING.md for the module convention."""

    name: str
    stage: int
    title: str
    quick: Any
    full: Any
    run: Callable[[Any, np.random.Generator], Results]
    plot: Callable[[Results], dict[str, Any]]
    check: Callable[[Results], None]
    summary: Callable[[Results], list[tuple[str, Any]]] | None = None
    description: str = field(default="")

    def config(self, variant: str) -> Any:
        if variant not in ("quick", "full"):
            raise ValueError(f"variant must be 'quick' or 'full', got {variant!r}")
        return self.quick if variant == "quick" else self.full


# ----------------------------------------------------------------------- JSON helpers


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, NumPy scalars/arrays, tuples and non-finite floats for JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    return obj


def config_hash(config: Any) -> str:
    """A stable 16-hex-digit hash of a config dataclass's fields."""
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mean_sd(values: Any) -> dict[str, Any]:
    """Summary of a headline number over seeds: sample mean, sample sd (n-1), the values."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_sd needs at least one value")
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "n": int(v.size), "values": v.tolist()}


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict[str, str]:
    import matplotlib

    import spiral

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "spiral": spiral.__version__,
    }


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- registry


def discover() -> dict[str, Experiment]:
    """Every ``EXPERIMENT`` defined by a module of :mod:`spiral.experiments`, by name."""
    import spiral.experiments as pkg

    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name in ("framework", "style", "runner"):
            continue
        module = importlib.import_module(f"spiral.experiments.{info.name}")
        exp = getattr(module, "EXPERIMENT", None)
        if isinstance(exp, Experiment):
            if exp.name in found:
                raise RuntimeError(f"two experiments are named {exp.name!r}")
            found[exp.name] = exp
    return found


def for_stage(stage: int) -> list[Experiment]:
    return [e for e in discover().values() if e.stage == stage]


# ---------------------------------------------------------------------------- running


def execute(
    exp: Experiment,
    variant: str = "quick",
    seed: int = 0,
    out: str | Path | None = None,
    *,
    check: bool = True,
) -> Results:
    """Run one experiment; optionally save results and figures under ``out/<name>/``."""
    config = exp.config(variant)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    results = exp.run(config, rng)
    wall = time.perf_counter() - t0
    record = {
        "experiment": exp.name,
        "stage": exp.stage,
        "title": exp.title,
        "variant": variant,
        "config": to_jsonable(config),
        "provenance": {
            "config_hash": config_hash(config),
            "seed": seed,
            "git_sha": git_sha(),
            "versions": versions(),
            "wall_time_s": round(wall, 3),
        },
        "results": to_jsonable(results),
    }
    if check:
        exp.check(record["results"])
    if out is not None:
        folder = Path(out) / exp.name
        atomic_write_text(
            folder / "results.json", json.dumps(record, indent=1, sort_keys=False) + "\n"
        )
        from spiral.experiments.style import save_figure

        for fig_name, fig in exp.plot(record["results"]).items():
            save_figure(fig, folder / f"{fig_name}.png")
    return record


def load_results(name: str, root: str | Path) -> dict[str, Any]:
    """Load a saved ``results.json`` record."""
    path = Path(root) / name / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no results for experiment {name!r} at {path}; run `spiral run STAGE --out {root}`"
        )
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data
