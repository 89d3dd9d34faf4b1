"""Guards on the book's prose, so the kinds of error the chapter reviews found cannot return.

1. A single run is never shown as "± 0.000": ``mean_sd`` marks n = 1 and the macros label it.
2. Measured numbers come from results: a decimal with three or more significant digits typed
   in a chapter's prose (outside code, math and macros) must not equal, at its printed
   precision, a value in the committed results that chapter uses -- a result macro could
   supply it, and a typed copy goes stale. Published figures, targets and worked-exercise
   arithmetic that happen to coincide are allowed explicitly below, each with its reason.
3. Reader-facing pages never mention the project's internals: the outline ("the seed"),
   "the issue" or the lab notes (``docs/lab-notes.md`` and ``docs/coverage/`` are exempt).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from spiral.book import CODE_RE, MACRO_RE, Book
from spiral.experiments.framework import mean_sd

pytestmark = pytest.mark.foundation

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHAPTERS = sorted(DOCS.glob("stages/*/index.md"))

# (chapter folder, number as printed) -> why a typed copy is right there
ALLOWED = {
    ("stage-01-ngrams", "2.454"): "makemore lecture's published bigram loss (an anchor we reproduce)",
    ("stage-01-ngrams", "2.4546"): "makemore lecture's add-one figure (anchor we reproduce)",
    ("stage-01-ngrams", "6.02"): "log2(65), arithmetic on the alphabet size, not a measurement",
    ("stage-01-ngrams", "1.15"): "a test's deliberately wrong temperature, an input",
    ("stage-01-ngrams", "1.88"): "nanoGPT README's published validation loss",
    ("stage-01-ngrams", "1.92"): "makemore README's published transformer loss",
    ("stage-04-mlp", "2.10"): "the stage's target, set before measuring",
    ("stage-04-mlp", "2.170"): "makemore's published MLP dev loss",
    ("stage-05-optimization", "0.999"): "Adam's default beta2, a hyperparameter",
    ("stage-08-transformer", "1.88"): "nanoGPT README's published validation loss",
    ("stage-08-transformer", "1.95"): "the stage's target, set before measuring",
    ("stage-08-transformer", "1.92"): "makemore README's published transformer loss",
    ("stage-10-tokenization", "1.75"): "worked Huffman example in an exercise (arithmetic)",
    ("stage-10-tokenization", "1.50"): "a hypothetical model's loss in an exercise prompt",
    ("stage-15-finetuning", "0.373"): "0.5 − 0.127 bits, arithmetic of the double-quantization derivation",
    ("stage-17-inference", "1.49"): "889 / 596 in an exercise's worked solution (given step costs)",
}

_NUMBER = re.compile(r"(?<![\w.,/\\-])(\d+\.\d+)(?![\w.]*\d)(%?)")
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]+?\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)


def prose(markdown: str) -> str:
    """The chapter's running text: code, macros, math, link targets and HTML tags blanked."""
    parts = CODE_RE.split(markdown)
    text = "".join(p if i % 2 == 0 else " " for i, p in enumerate(parts))
    text = _MATH.sub(" ", MACRO_RE.sub(" ", text))
    return re.sub(r"<[^>]+>", " ", re.sub(r"\]\([^)]*\)", "]", text))


def _numbers(node: object) -> Iterator[float]:
    if isinstance(node, bool):
        return
    if isinstance(node, (int, float)):
        yield float(node)
    elif isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)


def result_values(markdown: str) -> set[float]:
    """Every number in the committed results that the chapter's macros name."""
    values: set[float] = set()
    for m in MACRO_RE.finditer(markdown):
        call = ast.parse(f"f({m.group(2)})", mode="eval").body
        assert isinstance(call, ast.Call)
        name = ast.literal_eval(call.args[0]) if call.args else None
        path = DOCS / "results" / str(name) / "results.json"
        if m.group(1) != "source" and path.is_file():
            values |= set(_numbers(json.loads(path.read_text())["results"]))
    return values


def typed_measurements(markdown: str, values: set[float] | None = None) -> list[tuple[str, str]]:
    """(number as printed, line) for typed decimals (>= 3 significant digits) that equal a
    value of the chapter's results at the printed precision (percentages: 100 x value)."""
    values = result_values(markdown) if values is None else values
    found = []
    for line in prose(markdown).splitlines():
        for m in _NUMBER.finditer(line):
            token, pct = m.groups()
            if len(token.replace(".", "").lstrip("0")) < 3:
                continue
            places = len(token.split(".")[1])
            if any(f"{c:.{places}f}" == token for v in values
                   for c in ((v, 100 * v) if pct else (v,))):
                found.append((token + pct, line.strip()))
    return found


def test_the_detector_finds_a_typed_result_and_ignores_macros_math_and_code():
    md = ('Loss {{ result("demo", "x") }} is 1.234 nats; `1.234` and $1.234$ are not prose.\n'
          "```\n1.234\n```\nA rounder 1.23 has three digits too, 2.5 has two; 12.3% is a share.\n")
    hits = [tok for tok, _ in typed_measurements(md, {1.2341, 2.5, 0.1234})]
    assert hits == ["1.234", "1.23", "12.3%"]
    assert typed_measurements(md, {9.99}) == []


@cache
def _chapter_hits(chapter: Path) -> tuple[tuple[str, str], ...]:
    return tuple(typed_measurements(chapter.read_text(encoding="utf-8")))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.parent.name)
def test_no_hand_typed_measured_numbers(chapter):
    typed = [(tok, line) for tok, line in _chapter_hits(chapter)
             if (chapter.parent.name, tok) not in ALLOWED]
    assert not typed, (f"{chapter.parent.name}: numbers typed by hand that a result macro "
                       f"could supply (or add a reasoned entry to ALLOWED): {typed}")


# --------------------------------------------------------------------- reader-facing words
INTERNAL = [
    (re.compile(r"\bthe seed(?:'s|’s| of this| for this| table)\b", re.I),
     "the book's outline is not 'the seed' to a reader"),
    (re.compile(r"\bthe issue(?:'s)?\b", re.I), "issues are project tracking, not book text"),
    (re.compile(r"\blab[ -]notes?\b", re.I), "the lab notes are not part of the reading path"),
]


def reader_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md")
                  if p.name != "lab-notes.md" and "coverage" not in p.relative_to(DOCS).parts)


def test_reader_facing_pages_never_mention_project_internals():
    bad = []
    for page in reader_pages():
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            bad += [f"{page.relative_to(DOCS)}:{n}: {m.group(0)!r} ({why})"
                    for pattern, why in INTERNAL for m in pattern.finditer(line)]
    assert not bad, "\n".join(bad)


def test_the_internal_words_detector_allows_random_seeds():
    ok = ("the seed-to-seed spread; created from the seed; results depend on the seed; "
          "each run's gap over its seed's floor.")
    wrong = "The seed's table; the seed of this book; as the issue asked; see the lab notes."
    assert not any(p.search(ok) for p, _ in INTERNAL)
    assert sum(len(p.findall(wrong)) for p, _ in INTERNAL) == 4


# --------------------------------------------------------------------- single runs
def test_a_single_run_is_marked_and_rendered_as_one_run(tmp_path):
    one = mean_sd([2.0])
    assert one["n"] == 1 and one["values"] == [2.0]
    folder = tmp_path / "results" / "single"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"results": {"x": one}}))
    assert Book(tmp_path).render('{{ result("single", "x") }}') == "2.000 (one run)"


# --------------------------------------------------------------------- extremes of runs
# "from {{ result(R, "a.values.1") }} to {{ result(R, "a.values.2") }}": the same list of
# runs, two positions, read as its extremes
_TYPED_EXTREME = re.compile(
    r"\b(?:from|between)\s*\{\{\s*result\(\s*(\"[^\"]+\"),\s*\"([^\"]*?\b(?:values|runs)\.)(\d+)"
    r"([^\"]*)\"[^}]*\}\}\s*(?:to|and)\s*\{\{\s*result\(\s*\1,\s*\"\2(?!\3\b)\d+\4\"", re.I)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.parent.name)
def test_extremes_of_runs_come_from_the_min_max_macro(chapter):
    """'The seeds range from A to B' must render min and max (``stat=``), not the runs at
    fixed positions: another set of seeds would silently make such a sentence false."""
    bad = [m.group(0) for m in _TYPED_EXTREME.finditer(chapter.read_text(encoding="utf-8"))]
    assert not bad, f"{chapter.parent.name}: extremes picked by position: {bad}"


def test_the_extreme_detector_sees_positional_picks():
    picked = 'range from {{ result("x", "a.values.1") }} to {{ result("x", "a.values.2") }}'
    runs = 'between {{ result("x", "runs.2.nats", ".3f") }} and {{ result("x", "runs.1.nats") }}'
    ok = 'range from {{ result("x", "a", stat="min") }} to {{ result("x", "a", stat="max") }}'
    steps = 'from {{ result("x", "runs.0.train.7") }} at order 8 to {{ result("x", "runs.0.train.8") }}'
    assert _TYPED_EXTREME.search(picked) and _TYPED_EXTREME.search(runs)
    assert not _TYPED_EXTREME.search(ok) and not _TYPED_EXTREME.search(steps)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.parent.name)
def test_no_macro_inside_inline_code(chapter):
    """Macros inside inline code are not expanded: the page would show the literal
    braces (it happened once, in stage 12)."""
    text = chapter.read_text(encoding="utf-8")
    assert "`{{" not in text and "}}`" not in text, chapter
