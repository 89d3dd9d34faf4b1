"""Stage 13: pipeline schedules, the GPipe bubble (p−1)/(m+p−1), and 1F1B's smaller memory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from spiral.distributed.pipeline import SCHEDULES, bubble_fraction, schedule

pytestmark = pytest.mark.stage13


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("p,m", [(2, 1), (2, 4), (4, 4), (4, 8), (3, 2)])
def test_every_micro_batch_goes_forward_then_backward_once(kind, p, m):
    for s in range(p):
        ops = schedule(kind, m, p, s)
        mm = 1 if kind == "naive" else m
        assert sorted(ops) == sorted([("F", i) for i in range(mm)] + [("B", i) for i in range(mm)])
        for i in range(mm):
            assert ops.index(("F", i)) < ops.index(("B", i))


def test_1f1b_keeps_at_most_p_minus_s_micro_batches_in_flight():
    p, m = 4, 8
    for s in range(p):
        live = peak = 0
        for op, _ in schedule("1f1b", m, p, s):
            live += 1 if op == "F" else -1
            peak = max(peak, live)
        assert peak == min(p - s, m)
    with pytest.raises(ValueError, match="schedule"):
        schedule("zigzag", 4, 2, 0)


def _timeline(world: int, kind: str, m: int) -> dict:
    pytest.importorskip("torch")
    from spiral.distributed.strategies import train
    from spiral.distributed.workload import TrainSpec

    spec = replace(TrainSpec(), steps=1, batch_size=8, schedule=kind, micro_batches=m)
    return train(spec, world, "pp", timeout_s=120)


@pytest.mark.parametrize("world,m", [(2, 4), (4, 4), pytest.param(4, 8, marks=pytest.mark.slow)])
def test_gpipe_bubble_fraction_matches_formula(world, m):
    run = _timeline(world, "gpipe", m)
    events = np.concatenate([r["events"] for r in run["ranks"]]).tolist()
    measured = bubble_fraction(events, 3, 4)  # the logical clock carried by the messages
    formula = (world - 1) / (m + world - 1)
    assert abs(measured - formula) <= 0.1 * formula
    wall = bubble_fraction(events, 5, 6)
    assert 0.0 < wall < 1.0  # the wall clock is recorded too (noisy here: two shared cores)


def test_1f1b_stores_fewer_activations_than_gpipe():
    world, m = 4, 8
    gpipe, onef = _timeline(world, "gpipe", m), _timeline(world, "1f1b", m)
    for s in range(world):
        assert gpipe["ranks"][s]["peak_in_flight"] == m
        assert onef["ranks"][s]["peak_in_flight"] == min(world - s, m)
    # stage 0 holds m micro-batches' activations under GPipe, p under 1F1B
    assert onef["ranks"][0]["peak_live_bytes"] < gpipe["ranks"][0]["peak_live_bytes"]
    events = np.concatenate([r["events"] for r in onef["ranks"]]).tolist()
    formula = (world - 1) / (m + world - 1)
    assert abs(bubble_fraction(events, 3, 4) - formula) <= 0.1 * formula
