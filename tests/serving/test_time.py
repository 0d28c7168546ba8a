"""Whose time: event time and the allocator's clock are never mixed, and an implausible
time is refused before anything changes."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import Allocator, InvalidInputError, UpdateStatus
from allocator.serving import AllocatorConfig
from tests.serving.helpers import T0, config

CANDS = ["taobao", "douyin", "merchant:1", "merchant:2"]
WALL = 1_790_000_000.0  # the injected wall clock: a year after the event times


def configured(**serving) -> AllocatorConfig:
    raw = config(reward_wait_s=600.0).model_dump(mode="json")
    raw["serving"].update(serving)
    return AllocatorConfig.model_validate(raw)


def test_event_time_decisions_keep_their_feedback_when_updates_carry_no_time():
    """The mixed-clock report: 60,000 decisions on event time, feedback 256 impressions
    late and without timestamps, used to expire every pending decision on the wall clock."""
    alloc = Allocator(configured(), seed=1, clock=lambda: WALL)
    ids, statuses = [], []
    for i in range(3000):
        ids.append(alloc.decide(CANDS, timestamp=T0 + 0.1 * i).decision_id)
        if i >= 256:
            statuses.append(alloc.update(ids[i - 256], {"order": 1.0}))
    assert set(statuses) == {UpdateStatus.APPLIED} and len(statuses) == 2744
    m = alloc.metrics()
    assert m["expired"] == 0 and m["duplicates"] == 0 and m["pending"] == 256


def test_a_wall_clock_allocator_refuses_event_timestamps_and_vice_versa():
    wall = Allocator(configured(time="wall"), seed=2, clock=lambda: WALL)
    with pytest.raises(InvalidInputError, match="runs on its own clock"):
        wall.decide(CANDS, timestamp=T0)
    assert wall.decide(CANDS).timestamp == WALL
    event = Allocator(configured(time="event"), seed=2, clock=lambda: WALL)
    with pytest.raises(InvalidInputError, match="timestamp is required"):
        event.decide(CANDS)
    d = event.decide(CANDS, timestamp=T0)
    assert event.update(d.decision_id, {"order": 1.0}) is UpdateStatus.APPLIED  # at T0
    assert event.metrics()["expired"] == 0


def test_auto_is_fixed_by_the_first_call_and_survives_a_snapshot(tmp_path):
    alloc = Allocator(configured(), seed=3, clock=lambda: WALL)
    alloc.decide(CANDS)  # no timestamp: the allocator's clock from now on
    with pytest.raises(InvalidInputError, match="runs on its own clock"):
        alloc.decide(CANDS, timestamp=T0)
    alloc.save(tmp_path / "s.npz")
    again = Allocator.load(tmp_path / "s.npz", clock=lambda: WALL)
    with pytest.raises(InvalidInputError, match="runs on its own clock"):
        again.decide(CANDS, timestamp=T0)


@pytest.mark.parametrize(
    ("timestamp", "match"),
    [
        (1e12, r"outside \[2000-01-01, 2100-01-01\)"),
        (-5.0, "outside"),
        (float("inf"), "expected epoch seconds"),
        (10**400, r"timestamp = <int of 1,329 bits>: expected epoch seconds"),  # no float
        (T0 + 1000 + 40 * 86_400, "max_time_jump_s"),
        (T0 + 1000 - 60, "max_clock_skew_s"),
    ],
)
def test_an_implausible_time_changes_nothing(timestamp, match):
    alloc = Allocator(configured(), seed=4, clock=lambda: WALL)
    for i in range(20):
        alloc.decide(CANDS, timestamp=T0 + 1000 + i * 0.01)
    before, meta = alloc.snapshot_state()
    with pytest.raises(InvalidInputError, match=match):
        alloc.decide(CANDS, timestamp=timestamp)
    after, meta_after = alloc.snapshot_state()
    assert meta_after["counters"]["rejected"] == meta["counters"]["rejected"] + 1
    meta_after["counters"]["rejected"] -= 1
    assert meta_after == meta
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    # the allocator still serves, on its event time
    assert alloc.decide(CANDS, timestamp=T0 + 1001).decision_id.endswith("14")


def test_expire_refuses_an_int_past_float_range_with_nothing_changed():
    alloc = Allocator(configured(), seed=4, clock=lambda: WALL)
    d = alloc.decide(CANDS, timestamp=T0 + 1000)
    before = alloc.snapshot_state()
    with pytest.raises(InvalidInputError, match=r"timestamp = <int of 1,329 bits>: expected"):
        alloc.expire(10**400)  # a raw OverflowError once
    after = alloc.snapshot_state()
    assert after[1] == before[1]
    for name, value in before[0].items():
        np.testing.assert_array_equal(after[0][name], value, err_msg=name)
    assert alloc.update(d.decision_id, {"order": 1.0}) is UpdateStatus.APPLIED


def test_a_batch_cannot_mix_given_and_missing_timestamps():
    alloc = Allocator(configured(), seed=5, clock=lambda: WALL)
    reqs = [{"candidates": CANDS, "timestamp": T0}, {"candidates": CANDS}]
    with pytest.raises(InvalidInputError, match="mix given and missing"):
        alloc.decide_many(reqs)
    assert alloc.metrics()["decisions"] == 0
