"""Coverage maps: every item of the seed's stage tied to a section that teaches it and a test
that proves it.

``docs/coverage/stage-NN.yaml`` lists items ``{kind, item, seed, section, test}``.
:func:`seed_items` reads the plan (shipped as ``docs/coverage/plan/``) and returns what a
stage must cover: its learning objectives, key concepts, derivations, visualizations and
trade-offs. :func:`check_map` reports every seed item without an entry and every section
anchor or test that does not exist.

Run ``python -m spiral.coverage 1`` to print stage 1's seed items.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("objective", "concept", "derivation", "code", "visualization", "tradeoff", "claim")


@dataclass(frozen=True)
class SeedItem:
    kind: str
    text: str


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("*", "").replace("`", "")).strip().lower()


PLAN_DIR = Path(__file__).resolve().parents[2] / "docs" / "coverage" / "plan"

# Stages 11-18 are planned in a compact form: one bullet per kind of item.
_COMPACT_KINDS = {
    "learn": "objective",
    "derive": "derivation",
    "build": "code",
    "measure and plot": "visualization",
    "trade-offs": "tradeoff",
}


def plan_text(stage: int, plan_dir: Path | None = None) -> str:
    """The plan file that describes ``stage`` (shipped in ``docs/coverage/plan/``)."""
    folder = PLAN_DIR if plan_dir is None else plan_dir
    name = "stages-01-10.md" if stage <= 10 else "stages-11-18.md"
    return (folder / name).read_text(encoding="utf-8")


def stage_section(seed_text: str, stage: int) -> str:
    m = re.search(rf"^## Stage {stage}:.*?$(.*?)(?=^## Stage \d+:|^# SPIRAL|\Z)", seed_text,
                  re.M | re.S)
    if not m:
        m = re.search(rf"^### Stage {stage} \S.*?$(.*?)(?=^##|\Z)", seed_text, re.M | re.S)
    if not m:
        raise ValueError(f"stage {stage} not found in the plan")
    return m.group(1)


def _split_top_level(text: str) -> list[str]:
    """Split a plan bullet into items at ';' (or, without any, at ',') outside brackets."""
    sep = ";" if ";" in re.sub(r"\([^)]*\)", "", text) else ","
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    out = []
    for part in parts:
        part = re.sub(r"^\s*(and|or)\s+", "", part.strip()).rstrip(". ").strip()
        if part:
            out.append(part)
    return out


def _compact_items(section: str) -> list[SeedItem]:
    """Items of a stage planned as ``- Learn: ...`` / ``- Derive: ...`` bullets."""
    items: list[SeedItem] = []
    for m in re.finditer(r"^- ([A-Za-z -]+?):\s*(.*?)(?=^- |\Z)", section, re.M | re.S):
        kind = _COMPACT_KINDS.get(m.group(1).strip().lower())
        if kind is None:
            continue
        body = re.sub(r"\s+", " ", m.group(2)).strip()
        items.extend(SeedItem(kind, t) for t in _split_top_level(body))
    return items


def _subsection(section: str, title: str) -> str:
    m = re.search(rf"^### {title}.*?$(.*?)(?=^### |\Z)", section, re.M | re.S)
    return m.group(1) if m else ""


def _table_first_cells(text: str) -> list[str]:
    """First cell of every body row of the Markdown tables in ``text`` (headers skipped)."""
    out: list[str] = []
    header_seen = False
    for line in text.splitlines():
        if not line.startswith("|"):
            header_seen = False  # a new table starts after any non-table line
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header_seen:
            header_seen = True  # the header row
            continue
        if cells and cells[0] and not set(cells[0]) <= set("-: "):
            out.append(cells[0])
    return out


def seed_items(seed_text: str, stage: int) -> list[SeedItem]:
    """The items of one stage of the seed that a coverage map must account for."""
    sec = stage_section(seed_text, stage)
    if stage > 10:
        return _compact_items(sec)
    items: list[SeedItem] = []
    for line in _subsection(sec, "Learning Objectives").splitlines():
        if line.startswith("- "):
            items.append(SeedItem("objective", line[2:].strip()))
    for first in _table_first_cells(_subsection(sec, "Key Concepts")):
        items.append(SeedItem("concept", first))
    for m in re.finditer(r"^\d+\.\s+\*\*(.+?)\*\*", _subsection(sec, "Mathematical Derivations"),
                         re.M):
        items.append(SeedItem("derivation", m.group(1).strip()))
    for m in re.finditer(r"^\d+\.\s+\*\*(.+?)\*\*", _subsection(sec, "Visualizations"), re.M):
        items.append(SeedItem("visualization", m.group(1).strip()))
    for first in _table_first_cells(_subsection(sec, "Trade-offs to Analyze")):
        items.append(SeedItem("tradeoff", first))
    return items


def heading_anchors(markdown: str) -> set[str]:
    """Anchors MkDocs creates for the headings of a page (toc slugs and explicit ``{#id}``)."""
    from markdown.extensions.toc import slugify

    anchors: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if not m:
            continue
        title = m.group(1)
        explicit = re.search(r"\{[^}]*#([\w-]+)[^}]*\}\s*$", title)
        if explicit:
            anchors.add(explicit.group(1))
            continue
        plain = re.sub(r"<[^>]+>|`|\*|\$", "", title)
        anchors.add(slugify(plain, "-"))
    anchors.update(re.findall(r'\bid="([\w-]+)"', markdown))
    return anchors


def _test_exists(root: Path, ref: str) -> bool:
    path, _, name = ref.partition("::")
    file = root / path
    if not file.is_file():
        return False
    if not name:
        return True
    func = name.split("::")[-1].split("[")[0]
    return re.search(rf"^\s*def {re.escape(func)}\(", file.read_text(encoding="utf-8"), re.M) \
        is not None


def check_map(root: Path, stage: int, seed_text: str | None) -> list[str]:
    """Problems with ``docs/coverage/stage-NN.yaml`` (an empty list means it is sound)."""
    import yaml

    path = root / "docs" / "coverage" / f"stage-{stage:02d}.yaml"
    problems: list[str] = []
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("stage") != stage or not data.get("items"):
        return [f"{path.name}: needs 'stage: {stage}' and a non-empty 'items' list"]
    covered: set[tuple[str, str]] = set()
    for i, item in enumerate(data["items"]):
        where = f"{path.name} item {i} ({item.get('item', '?')!r})"
        for key in ("kind", "item", "section", "test"):
            if not item.get(key):
                problems.append(f"{where}: missing {key!r}")
        if item.get("kind") not in KINDS:
            problems.append(f"{where}: kind must be one of {KINDS}")
        covered.add((str(item.get("kind")), _norm(str(item.get("seed") or item.get("item") or ""))))
        section = str(item.get("section", ""))
        page, _, anchor = section.partition("#")
        md = root / "docs" / page
        if not md.is_file():
            problems.append(f"{where}: section page {page} does not exist")
        elif anchor and anchor not in heading_anchors(md.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading with anchor #{anchor} in {page}")
        tests = item.get("test") or []
        for ref in [tests] if isinstance(tests, str) else tests:
            if not _test_exists(root, str(ref)):
                problems.append(f"{where}: test {ref} does not exist")
    if seed_text is not None:
        for s in seed_items(seed_text, stage):
            if (s.kind, _norm(s.text)) not in covered:
                problems.append(f"{path.name}: seed {s.kind} not covered: {s.text!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m spiral.coverage STAGE [SEED_FILE]")
        return 2
    stage = int(args[0])
    text = Path(args[1]).read_text(encoding="utf-8") if len(args) > 1 else plan_text(stage)
    for s in seed_items(text, stage):
        print(f"{s.kind:13s} {s.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
