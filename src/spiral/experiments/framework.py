"""Experiments: a config, a pure ``run``, a ``plot``, and a ``check`` of the chapter's claim.

Every figure and every number in the book comes from an :class:`Experiment`. Running one
writes ``<out>/<name>/results.json`` (with provenance: config hash, seed, git SHA, library
versions, wall time) and one PNG per figure, drawn deterministically in the house style.
The full variants' outputs are committed under ``docs/results/`` and read by the chapter
macros (:mod:`spiral.book`); the quick variants run in the test suite, where ``check``
turns each into a test of the claim the chapter makes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spiral.records import atomic_write_text, git_sha, to_jsonable, versions

__all__ = [
    "Experiment", "FULL_RUN_PENDING", "atomic_write_text", "config_hash", "discover",
    "execute", "for_stage",
    "git_sha", "load_results", "mean_sd", "to_jsonable", "versions",
]

Results = dict[str, Any]

# Experiments whose FULL variant has not been run yet, with what it needs. Their quick
# variants run in the test suite like every other; no chapter may cite them (a test checks
# it), and a name must leave this table in the commit that adds its results (a test checks
# that too). Most need the book's model (stage 14) and hours of CPU.
FULL_RUN_PENDING: dict[str, str] = {
}


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


# ------------------------------------------------------------------ config hashes, seeds


def config_hash(config: Any) -> str:
    """A stable 16-hex-digit hash of a config dataclass's fields."""
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mean_sd(values: Any) -> dict[str, Any]:
    """Summary of a headline number over seeds: sample mean, sample sd (n-1), n, the values.

    A single value has no sample sd: ``n == 1`` marks it, and ``sd`` is then a 0.0 placeholder
    (kept numeric so plots and checks of one-seed quick variants still run), not a
    measurement. The book's ``result``/``table`` macros render such a summary as one run,
    never as "± 0.000"; a claim that compares runs needs n >= 3.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_sd needs at least one value")
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "n": int(v.size), "values": v.tolist()}


# --------------------------------------------------------------------------- registry


def discover() -> dict[str, Experiment]:
    """Every ``EXPERIMENT`` defined by a module of :mod:`spiral.experiments`, by name.

    Experiments live in subpackages named by concept (``spiral.experiments.ngram``,
    ``spiral.experiments.attention``, ...); every module below the package is imported once
    and its module-level ``EXPERIMENT`` (if any) is registered.
    """
    import spiral.experiments as pkg

    found: dict[str, Experiment] = {}
    modules = pkgutil.walk_packages(pkg.__path__, prefix="spiral.experiments.")
    for info in sorted(modules, key=lambda m: m.name):
        if info.ispkg or info.name.rsplit(".", 1)[-1] in ("framework", "runner"):
            continue
        module = importlib.import_module(info.name)
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
        from spiral.plotting import save_figure

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
