"""The chapter macros: numbers, tables, figures and code come from the repo, never by hand."""

from __future__ import annotations

import json

import pytest

from spiral.book import Book, MacroError

pytestmark = pytest.mark.foundation


@pytest.fixture
def book(tmp_path):
    folder = tmp_path / "results" / "demo"
    folder.mkdir(parents=True)
    record = {"results": {
        "loss": 1.23456, "count": 1234567.0, "best": {"mean": 1.5, "sd": 0.0123},
        "list": [10, 20], "bad": "inf",
        "table": {"columns": ["model", "nats"], "rows": [["kn", 1.5], ["add-k", {"mean": 2.0, "sd": 0.1}]]},
    }}
    (folder / "results.json").write_text(json.dumps(record))
    (folder / "curve.png").write_bytes(b"\x89PNG")
    return Book(tmp_path)


def test_result_formats_numbers_and_mean_sd(book):
    md = 'a {{ result("demo", "loss", ".2f") }} b {{ result("demo", "best") }} ' \
         'c {{ result("demo", "list.1", "d") }} d {{ result("demo", "count", ",.0f") }} ' \
         'e {{ result("demo", "bad") }}'
    assert book.render(md) == "a 1.23 b 1.500 ± 0.012 c 20 d 1,234,567 e ∞"


def test_a_signed_difference_signs_its_mean_not_its_spread(book):
    assert book.render('{{ result("demo", "best", "+.3f") }}') == "+1.500 ± 0.012"


def test_missing_key_or_result_fails_loudly(book):
    with pytest.raises(MacroError, match="not found"):
        book.render('{{ result("demo", "nope") }}')
    with pytest.raises(MacroError, match="no results file"):
        book.render('{{ result("ghost", "loss") }}')


def test_table_renders_markdown(book):
    out = book.render('{{ table("demo", "table", ".2f") }}')
    assert "| model | nats |" in out and "| kn | 1.50 |" in out and "2.00 ± 0.10" in out


def test_figure_path_is_relative_to_the_page(book):
    out = book.render('{{ figure("demo", "curve", "A curve.") }}', page="stages/stage-01-x/index.md")
    assert "](../../results/demo/curve.png)" in out and "<figcaption>A curve.</figcaption>" in out
    with pytest.raises(MacroError, match="no figure"):
        book.render('{{ figure("demo", "nope") }}')


def test_source_includes_code_by_name_and_breaks_on_rename(book):
    out = book.render('{{ source("spiral.evaluate.evaluate") }}')
    assert out.startswith('```python title="spiral.evaluate.evaluate"') and "def evaluate(" in out
    with pytest.raises(MacroError, match="not found"):
        book.render('{{ source("spiral.evaluate.evaluate_renamed") }}')


def test_macros_never_evaluate_code(book):
    with pytest.raises(MacroError, match="cannot parse"):
        book.render('{{ result(__import__("os").getcwd(), "x") }}')


def test_other_braces_are_left_alone(book):
    text = "$x^{2}$ and a dict {'a': 1} and {{ not_a_macro }}"
    assert book.render(text) == text


def test_macros_in_code_are_shown_not_run(book):
    text = 'write `{{ result("x", "y") }}` or\n```\n{{ source("nope") }}\n```\nthen {{ result("demo", "loss", ".1f") }}'
    assert book.render(text) == text.replace('{{ result("demo", "loss", ".1f") }}', "1.2")


def test_table_escapes_pipes(tmp_path):
    import json as _json

    folder = tmp_path / "results" / "p"
    folder.mkdir(parents=True)
    record = {"results": {"t": {"columns": ["|x|", "y"], "rows": [["a|b", 1]]}}}
    (folder / "results.json").write_text(_json.dumps(record))
    out = Book(tmp_path).render('{{ table("p", "t") }}')
    assert "| \\|x\\| | y |" in out and "| a\\|b | 1 |" in out


@pytest.fixture
def runs_book(tmp_path):
    folder = tmp_path / "results" / "runs"
    folder.mkdir(parents=True)
    record = {"config": {"seeds": [4, 5, 6]}, "results": {
        "one": {"mean": 2.5, "sd": "nan", "n": 1, "values": [2.5]},
        "old_one": {"mean": 2.5, "sd": 0.0, "n": 1, "values": [2.5]},
        "three": {"mean": 21.5, "sd": 20.0, "n": 3, "values": [13.0, 7.2, 44.3]},
        "runs": [{"seed": 1, "nats": 1.91}, {"seed": 2, "nats": 1.90}, {"seed": 3, "nats": 1.92}],
        "table": {"columns": ["model", "nats"], "rows": [["a", {"mean": 2.0, "sd": 0.0, "n": 1}]]},
    }}
    (folder / "results.json").write_text(json.dumps(record))
    return Book(tmp_path)


def test_a_single_run_is_labelled_never_plus_minus_zero(runs_book):
    """Regression: n = 1 rendered as "2.500 ± 0.000", a perfectly reproducible result."""
    for key in ("one", "old_one"):
        assert runs_book.render(f'{{{{ result("runs", "{key}") }}}}') == "2.500 (one run)"
    table = runs_book.render('{{ table("runs", "table", ".2f") }}')
    assert "| a | 2.00 (one run) |" in table and "±" not in table
    assert runs_book.render('{{ result("runs", "three", ".1f") }}') == "21.5 ± 20.0"


def test_extremes_of_runs_render_from_results(runs_book):
    r = runs_book.render
    assert r('{{ result("runs", "three", ".1f", stat="min") }}') == "7.2"
    assert r('{{ result("runs", "three", ".1f", stat="max") }}') == "44.3"
    assert r('{{ result("runs", "three", stat="argmin") }}') == "5"  # seeds from the config
    assert r('{{ result("runs", "three", stat="argmax") }}') == "6"
    assert r('{{ result("runs", "runs.*.nats", ".2f", stat="max") }}') == "1.92"
    assert r('{{ result("runs", "runs.*.nats", stat="argmin", seeds="runs.*.seed") }}') == "2"
    with pytest.raises(MacroError, match="stat must be"):
        r('{{ result("runs", "three", stat="median") }}')
    with pytest.raises(MacroError, match="list of numbers"):
        r('{{ result("runs", "table", stat="min") }}')
    with pytest.raises(MacroError, match="seeds"):
        r('{{ result("runs", "runs.*.nats", stat="argmin", seeds="three.values.0") }}')
