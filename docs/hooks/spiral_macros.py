"""MkDocs hook: render spiral's chapter macros (result, table, figure, source) on every page."""

from __future__ import annotations

from typing import Any

from spiral.book import Book, MacroError

_book: Book | None = None


def on_config(config: Any) -> Any:
    global _book
    _book = Book(config["docs_dir"])
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    assert _book is not None
    try:
        return _book.render(markdown, page=page.file.src_uri)
    except MacroError as err:
        from mkdocs.exceptions import PluginError

        raise PluginError(str(err)) from None
