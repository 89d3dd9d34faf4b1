"""MkDocs hooks: render spiral's chapter macros (result, table, figure, source) on every page,
and list the chapters that exist in the navigation, grouped by spiral."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spiral.book import Book, MacroError

_book: Book | None = None


def _page_title(page: Path) -> str:
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem.replace("-", " ")


def chapter_nav(docs_dir: Path) -> list[dict[str, Any]]:
    """One nav section per spiral with the chapters present under docs/stages."""
    from spiral.stages import SPIRALS, STAGES

    sections: list[dict[str, Any]] = []
    for number, title in SPIRALS.items():
        pages = []
        for s in STAGES:
            if s.spiral != number:
                continue
            folder = docs_dir / "stages" / s.chapter_dir
            if (folder / "index.md").is_file():
                pages.append({f"{s.number}. {s.title}": f"stages/{s.chapter_dir}/index.md"})
                # a chapter's further pages (e.g. running real weights) follow it in the nav
                for extra in sorted(folder.glob("*.md")):
                    if extra.name != "index.md":
                        pages.append({f"{s.number}. {_page_title(extra)}":
                                      f"stages/{s.chapter_dir}/{extra.name}"})
        if pages:
            sections.append({f"Spiral {number}: {title}": pages})
    return sections


def on_config(config: Any) -> Any:
    global _book
    _book = Book(config["docs_dir"])
    nav = config.get("nav")
    if nav is not None:
        at = next((i for i, item in enumerate(nav)
                   if isinstance(item, dict) and "Appendices" in item), len(nav))
        nav[at:at] = chapter_nav(Path(config["docs_dir"]))
    return config


def stage_map(docs_dir: Path, page_uri: str) -> str:
    """The 18-stage table, linking the chapters that exist."""
    import posixpath

    from spiral.stages import SPIRALS, STAGES

    rows = ["| stage | title | spiral | reading time |", "|---:|---|---|---:|"]
    for s in STAGES:
        title = s.title
        if (docs_dir / "stages" / s.chapter_dir / "index.md").is_file():
            rel = posixpath.relpath(f"stages/{s.chapter_dir}/index.md",
                                    posixpath.dirname(page_uri) or ".")
            title = f"[{s.title}]({rel})"
        else:
            title += " *(in preparation)*"
        rows.append(f"| {s.number} | {title} | {SPIRALS[s.spiral]} | {s.reading_minutes} min |")
    return "\n".join(rows) + "\n"


def chapter_references(docs_dir: Path) -> str:
    """Every chapter's "References" section, gathered under one heading per stage."""
    import re

    from spiral.stages import STAGES

    out = []
    for s in STAGES:
        page = docs_dir / "stages" / s.chapter_dir / "index.md"
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        m = re.search(r"^## References\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
        if m and m.group(1).strip():
            body = re.sub(r"^(#{3,6}) ", lambda h: "#" + h.group(1) + " ", m.group(1).strip(),
                          flags=re.M)
            link = f"stages/{s.chapter_dir}/index.md"
            out.append(f"## Stage {s.number} — [{s.title}]({link})\n\n{body}\n")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    assert _book is not None
    if "<!-- chapter-references -->" in markdown:
        markdown = markdown.replace(
            "<!-- chapter-references -->", chapter_references(Path(config["docs_dir"]))
        )
    if "<!-- stage-map -->" in markdown:
        markdown = markdown.replace(
            "<!-- stage-map -->", stage_map(Path(config["docs_dir"]), page.file.src_uri)
        )
    try:
        return _book.render(markdown, page=page.file.src_uri)
    except MacroError as err:
        from mkdocs.exceptions import PluginError

        raise PluginError(str(err)) from None
