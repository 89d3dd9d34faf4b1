"""Every stage's coverage map names real sections and real tests, and covers the seed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spiral.coverage import check_map, heading_anchors, seed_items

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT.parent / "shared" / "seed" / "stages-01-10.md"
MAPS = sorted((ROOT / "docs" / "coverage").glob("stage-*.yaml"))


def _stage(path: Path) -> int:
    m = re.search(r"stage-(\d+)", path.name)
    assert m
    return int(m.group(1))


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.name, marks=getattr(pytest.mark, f"stage{_stage(p)}")) for p in MAPS]
)
def test_coverage_map_is_sound_and_complete(path):
    stage = _stage(path)
    seed = SEED.read_text(encoding="utf-8") if SEED.is_file() and stage <= 10 else None
    problems = check_map(ROOT, stage, seed)
    assert not problems, "\n".join(problems)


@pytest.mark.foundation
def test_every_written_chapter_has_a_coverage_map():
    for chapter in (ROOT / "docs" / "stages").glob("stage-*/index.md"):
        stage = int(re.search(r"stage-(\d+)", str(chapter)).group(1))
        assert (ROOT / "docs" / "coverage" / f"stage-{stage:02d}.yaml").is_file(), chapter


@pytest.mark.foundation
def test_anchor_and_seed_parsers():
    md = "# The chain rule\n## MLE is counting {#mle}\n```\n# not a heading\n```\n### $p$ and `q`\n"
    assert heading_anchors(md) == {"the-chain-rule", "mle", "p-and-q"}
    if SEED.is_file():
        items = seed_items(SEED.read_text(encoding="utf-8"), 1)
        kinds = {i.kind for i in items}
        assert kinds == {"objective", "concept", "derivation", "visualization", "tradeoff"}
        assert any(i.text == "Chain Rule of Probability" for i in items)
