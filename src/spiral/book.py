"""The chapter macros: measured numbers, tables, figures and library code, by name.

A chapter never types a measured number or pastes library code. It writes

    {{ result("ngram_order_sweep", "kn.best_val_nats", ".3f") }}
    {{ table("ngram_order_sweep", "table") }}
    {{ figure("ngram_order_sweep", "order_sweep", "Caption.") }}
    {{ source("spiral.ngram.NGramLM.fit") }}

and the book build (``docs/hooks/spiral_macros.py``) replaces each call with text made from
``docs/results/<name>/results.json`` or from the library itself. A missing result, key or
object is an error, so ``mkdocs build --strict`` fails instead of printing a stale number.
Only these four names are recognised; the syntax is parsed with :mod:`ast`, never ``eval``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import math
import posixpath
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

CODE_RE = re.compile(r"(^[ \t]*(?:```|~~~).*?^[ \t]*(?:```|~~~)[ \t]*$|`[^`\n]+`)", re.S | re.M)
MACRO_RE = re.compile(r"\{\{\s*(result|table|figure|source)\((.*?)\)\s*\}\}", re.S)


class MacroError(ValueError):
    """A chapter macro refers to something that does not exist."""


def _lookup(data: Any, key: str, where: str) -> Any:
    node = data
    parts = key.split(".")
    for at, part in enumerate(parts):
        if part == "*" and isinstance(node, list):  # runs.*.field: the field of every run
            rest = ".".join(parts[at + 1:])
            return [_lookup(x, rest, where) if rest else x for x in node]
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            try:
                node = node[int(part)]
            except IndexError:
                raise MacroError(f"{where}: index {part} out of range in key {key!r}") from None
        else:
            keys = list(node)[:12] if isinstance(node, dict) else type(node).__name__
            raise MacroError(f"{where}: key {key!r} not found at {part!r} (have: {keys})")
    return node


def _summary(value: dict[str, Any], fmt: str) -> str:
    """``mean ± sd``; a single run (n = 1, or no finite sd) is its value, labelled as one run
    (a "± 0.000" would claim a perfectly reproducible result)."""
    sd = value["sd"]
    if value.get("n") == 1 or not isinstance(sd, (int, float)) or not math.isfinite(sd):
        return f"{_fmt(value['mean'], fmt)} (one run)"
    # a sign flag ("+.3f") is for the mean; a spread is never negative, so it takes none
    return f"{_fmt(value['mean'], fmt)} ± {_fmt(sd, fmt.replace('+', '', 1))}"


def _extreme(value: Any, stat: str, seeds: Any, where: str) -> tuple[Any, bool]:
    """(min or max of the runs, False) or (the seed that attains it, True)."""
    values = value.get("values") if isinstance(value, dict) else value
    if not (isinstance(values, list) and values
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise MacroError(f"{where}: stat={stat!r} needs a list of numbers or a mean_sd summary")
    i = min(range(len(values)), key=values.__getitem__) if stat in ("min", "argmin") \
        else max(range(len(values)), key=values.__getitem__)
    if stat in ("min", "max"):
        return values[i], False
    if not (isinstance(seeds, list) and len(seeds) == len(values)):
        raise MacroError(f"{where}: stat={stat!r} needs the runs' seeds (pass seeds=KEY, or "
                         "record 'seeds' next to the values or in the config)")
    return seeds[i], True


def _fmt(value: Any, fmt: str) -> str:
    if isinstance(value, str):
        if value in ("inf", "-inf", "nan"):
            return {"inf": "∞", "-inf": "−∞", "nan": "NaN"}[value]
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if fmt.endswith(",d") and isinstance(value, float):
            value = int(round(value))
        return format(value, fmt)
    raise MacroError(f"cannot format a {type(value).__name__} as a number")


class Book:
    """Renders macros for pages under ``docs_dir`` from ``docs_dir/results``."""

    def __init__(self, docs_dir: str | Path) -> None:
        self.docs_dir = Path(docs_dir)
        self.results_dir = self.docs_dir / "results"
        self._cache: dict[str, dict[str, Any]] = {}

    def record(self, name: str) -> dict[str, Any]:
        if name not in self._cache:
            path = self.results_dir / name / "results.json"
            if not path.is_file():
                raise MacroError(f"no results file {path}; run the experiment {name!r} first")
            with open(path, encoding="utf-8") as f:
                self._cache[name] = json.load(f)
        return self._cache[name]

    # -- the four macros --------------------------------------------------------------

    def result(self, name: str, key: str, fmt: str = ".3f", unit: str = "", stat: str = "",
               seeds: str = "") -> str:
        """One number (or ``mean ± sd`` for a dict with mean and sd; one run is labelled).

        ``stat`` names an extreme of the runs behind ``key`` (a mean_sd summary, a list, or
        ``runs.*.field``): ``"min"``/``"max"`` give the value, ``"argmin"``/``"argmax"`` the
        seed that attains it (from ``seeds``, a key of the results, else a ``seeds`` list next
        to the values or in the config). Prose that names extremes renders them from results.
        """
        where = f"result({name!r}, {key!r})"
        record = self.record(name)
        value = _lookup(record.get("results", {}), key, where)
        if stat:
            if stat not in ("min", "max", "argmin", "argmax"):
                raise MacroError(f"{where}: stat must be min, max, argmin or argmax")
            runs = (_lookup(record.get("results", {}), seeds, where) if seeds
                    else value.get("seeds", record.get("config", {}).get("seeds"))
                    if isinstance(value, dict) else record.get("config", {}).get("seeds"))
            value, is_seed = _extreme(value, stat, runs, where)
            return f"{value}{unit}" if is_seed else f"{_fmt(value, fmt)}{unit}"
        if isinstance(value, dict) and "mean" in value and "sd" in value:
            return f"{_summary(value, fmt)}{unit}"
        return f"{_fmt(value, fmt)}{unit}"

    def table(self, name: str, key: str, fmt: str = ".3f") -> str:
        """A stored ``{"columns": [...], "rows": [[...]]}`` as a Markdown table."""
        t = _lookup(self.record(name).get("results", {}), key, f"table({name!r})")
        if not (isinstance(t, dict) and "columns" in t and "rows" in t):
            raise MacroError(f"table({name!r}, {key!r}): value needs 'columns' and 'rows'")
        def cell(text: str) -> str:  # a literal "|" would split the Markdown cell
            return text.replace("|", "\\|")

        cols = [cell(str(c)) for c in t["columns"]]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in t["rows"]:
            if len(row) != len(cols):
                raise MacroError(f"table({name!r}, {key!r}): a row has {len(row)} cells, "
                                 f"expected {len(cols)}")
            cells = []
            for v in row:
                if isinstance(v, dict) and "mean" in v and "sd" in v:
                    cells.append(_summary(v, fmt))
                elif isinstance(v, float):
                    cells.append(_fmt(v, fmt))
                elif v is None:
                    cells.append("n/a")
                else:
                    cells.append(_fmt(v, fmt) if v in ("inf", "-inf", "nan") else str(v))
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def figure(self, name: str, fig: str, caption: str = "", page: str = "index.md") -> str:
        """A committed figure, linked relative to the page that shows it."""
        path = self.results_dir / name / f"{fig}.png"
        if not path.is_file():
            raise MacroError(f"no figure {path}; run the experiment {name!r} first")
        rel = posixpath.relpath(
            f"results/{name}/{fig}.png", posixpath.dirname(page) or "."
        )
        alt = caption.replace("]", ")").replace("[", "(") or fig
        out = f"![{alt}]({rel}){{ loading=lazy }}"
        if caption:
            out = f'<figure markdown="span">\n{out}\n<figcaption>{caption}</figcaption>\n</figure>'
        return out

    def source(self, dotted: str, lang: str = "python") -> str:
        """The source of a library object, by its dotted name, as a fenced block."""
        obj = resolve_object(dotted)
        try:
            code = inspect.getsource(obj)  # type: ignore[arg-type]
        except (TypeError, OSError) as err:
            raise MacroError(f"source({dotted!r}): no source available ({err})") from None
        code = textwrap.dedent(code).rstrip()
        return f'```{lang} title="{dotted}"\n{code}\n```'

    # -- rendering ------------------------------------------------------------------

    def render(self, markdown: str, page: str = "index.md") -> str:
        """Replace every macro call in ``markdown`` (a page at ``page`` under docs)."""
        calls: dict[str, Callable[..., str]] = {
            "result": self.result,
            "table": self.table,
            "figure": lambda *a, **k: self.figure(*a, **{**k, "page": page}),
            "source": self.source,
        }

        def sub(m: re.Match[str]) -> str:
            name, args_src = m.group(1), m.group(2)
            try:
                call = ast.parse(f"f({args_src})", mode="eval").body
                assert isinstance(call, ast.Call)
                args = [ast.literal_eval(a) for a in call.args]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
            except (SyntaxError, ValueError, AssertionError) as err:
                raise MacroError(f"{page}: cannot parse {m.group(0)!r}: {err}") from None
            try:
                return calls[name](*args, **kwargs)
            except MacroError as err:
                raise MacroError(f"{page}: {err}") from None
            except TypeError as err:
                raise MacroError(f"{page}: bad arguments in {m.group(0)!r}: {err}") from None

        # Macros inside code (fenced blocks, inline spans) are shown, not run.
        parts = CODE_RE.split(markdown)
        for i in range(0, len(parts), 2):
            parts[i] = MACRO_RE.sub(sub, parts[i])
        return "".join(parts)


def resolve_object(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and walk the remaining attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise MacroError(f"source({dotted!r}): {attr!r} not found")
            obj = getattr(obj, attr)
        return obj
    raise MacroError(f"source({dotted!r}): no importable module")
