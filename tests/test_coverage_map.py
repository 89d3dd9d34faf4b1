"""Every stage's coverage map names real sections and real tests, and covers the seed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spiral.coverage import check_map, heading_anchors, plan_text, seed_items

ROOT = Path(__file__).resolve().parent.parent
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
    problems = check_map(ROOT, stage, plan_text(stage))
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
    items = seed_items(plan_text(1), 1)
    kinds = {i.kind for i in items}
    assert kinds == {"objective", "concept", "derivation", "visualization", "tradeoff"}
    assert any(i.text == "Chain Rule of Probability" for i in items)


@pytest.mark.foundation
def test_compact_plan_of_stages_11_to_18_is_parsed_into_items():
    for stage in range(11, 19):
        items = seed_items(plan_text(stage), stage)
        kinds = {i.kind for i in items}
        assert {"objective", "derivation", "code", "visualization"} <= kinds, stage
        assert all(i.text and not i.text.startswith(("and ", ",", ";")) for i in items)
    texts = [i.text for i in seed_items(plan_text(11), 11)]
    assert "a largest-batch finder" in texts
    assert "training vs inference memory" in texts


@pytest.mark.foundation
def test_the_shipped_plan_matches_the_shared_one_when_present():
    """The repository ships its own copy of the plan; keep it in step with the shared one."""
    shared = ROOT.parent / "shared" / "seed"
    for name in ("stages-01-10.md", "stages-11-18.md"):
        if (shared / name).is_file():
            assert (shared / name).read_text(encoding="utf-8") == \
                (ROOT / "docs" / "coverage" / "plan" / name).read_text(encoding="utf-8")
