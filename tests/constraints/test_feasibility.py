"""The bounded-time feasibility checks agree with brute force over every request and time,
in both directions, and stay small where brute force explodes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from allocator.config import parse_config
from allocator.constraints import Constraint, ConstraintSet
from allocator.constraints import feasibility as fz
from allocator.errors import ConfigError
from tests import naive

DAY0 = datetime(2025, 10, 1, tzinfo=UTC)
GROUPS = ("taobao", "douyin", "mini_shop")
ATTRS = {"category": ["food", "toys", "apparel"], "slot": ["top", "feed"], "city": ["a", "b"]}


def random_constraint(rng: np.random.Generator, i: int, kinds=("floor", "cap")) -> Constraint:
    kind = str(rng.choice(kinds))
    roll = rng.random()
    if kind == "cap" or roll < 0.7:
        target = {"group": str(rng.choice(GROUPS))}
    elif roll < 0.85:
        target = {"cold_in_group": str(rng.choice(GROUPS))}
    else:
        target = {"arm": f"merchant:{rng.integers(2)}"}
    scope = {
        attr: sorted(rng.choice(values, rng.integers(1, len(values) + 1), replace=False).tolist())
        for attr, values in ATTRS.items()
        if rng.random() < 0.4
    }
    start = DAY0 + timedelta(days=int(rng.integers(0, 6)))
    shape = str(rng.choice(["constant", "linear", "step"]))
    lo, hi = (0.05, 0.6) if kind == "floor" else (0.0, 0.9)
    schedule = {
        "start": start.isoformat(),
        "end": (start + timedelta(days=int(rng.integers(1, 8)))).isoformat(),
        "start_value": round(float(rng.uniform(lo, hi)), 2),
        "end_value": round(float(rng.uniform(lo, hi)), 2),
        "shape": shape,
        "steps": int(rng.integers(1, 5)),
    }
    return Constraint.model_validate(
        {"name": f"c{i}", "kind": kind, "target": target, "scope": scope, "schedule": schedule}
    )


def refuses(check, *args) -> bool:
    try:
        check(*args)
    except ValueError:
        return True
    return False


def compare(check, reference, n_sets: int, seed: int, kinds, size=(2, 6), extra=()):
    """Run both on random sets; return (refused, accepted) counts; fail on a disagreement."""
    rng = np.random.default_rng(seed)
    counts = [0, 0]
    for _ in range(n_sets):
        cs = [random_constraint(rng, i, kinds) for i in range(rng.integers(*size))]
        want = reference(cs, *extra)
        assert refuses(check, cs, *extra) == want, [c.model_dump(mode="json") for c in cs]
        counts[0 if want else 1] += 1
    return counts


def test_floor_sums_agree_with_brute_force_both_ways():
    refused, accepted = compare(fz.check_floor_sums, naive.floor_sum_violation, 300, 1, ["floor"])
    assert refused >= 50 and accepted >= 50, (refused, accepted)


def merchant_group(arm: str) -> str | None:
    """The registry's answer for the random sets' arms: merchants are Mini Shop."""
    return "mini_shop" if arm.startswith("merchant:") else None


def cap_below_nested_floor(cs, group_of_arm=lambda arm: None) -> bool:
    """Brute force: a floor inside a cap's target (the same target, the cold arms of the
    capped group, or an arm of it) counts as a floor on the cap's target."""
    for cap in cs:
        if cap.kind != "cap":
            continue
        for floor in cs:
            if floor.kind != "floor":
                continue
            t, group = floor.target, getattr(cap.target, "group", None)
            arm = getattr(t, "arm", None)
            by_arm = arm is not None and group_of_arm(arm) == group
            inside = t == cap.target or (
                group is not None and (getattr(t, "cold_in_group", None) == group or by_arm)
            )
            if inside and naive.cap_below_floor(
                [cap, floor.model_copy(update={"target": cap.target})]
            ):
                return True
    return False


def test_caps_above_floors_agree_with_brute_force_both_ways():
    refused, accepted = compare(
        fz.check_caps_above_floors, cap_below_nested_floor, 300, 2, ["floor", "cap"]
    )
    assert refused >= 30 and accepted >= 30, (refused, accepted)


def test_caps_above_arm_floors_agree_with_brute_force_given_the_registry():
    """With the arms' groups known, a group cap below a floor on one of its arms is caught
    exactly where brute force finds the conflict, and only there."""
    refused, accepted = compare(
        fz.check_caps_above_floors, cap_below_nested_floor, 300, 12, ["floor", "cap"],
        extra=(merchant_group,),
    )  # fmt: skip
    assert refused >= 30 and accepted >= 30, (refused, accepted)


def test_a_group_cap_below_a_floor_inside_the_group_is_refused():
    """Cold arms or one arm of a capped group are served only within the cap: a cap below
    their floor breaks one of the two on every request that offers them."""
    sched = {"start": "2025-10-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    cap = {"name": "cap", "kind": "cap", "target": {"group": "mini_shop"},
           "schedule": {**sched, "start_value": 0.05}}  # fmt: skip
    cold = {"name": "cold", "kind": "floor", "target": {"cold_in_group": "mini_shop"},
            "schedule": {**sched, "start_value": 0.3}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"cap 'cap' \(0.050\) is below floor 'cold'"):
        parse_config(ConstraintSet, {"constraints": [cap, cold]}, "test")
    # disjoint scopes, or a cold floor in another group, are feasible and accepted
    parse_config(
        ConstraintSet,
        {
            "constraints": [
                {**cap, "scope": {"slot": ["top"]}},
                {**cold, "scope": {"slot": ["feed"]}},
            ]
        },
        "test",
    )
    parse_config(ConstraintSet, {"constraints": [
        cap, {**cold, "target": {"cold_in_group": "taobao"}}]}, "test")  # fmt: skip
    arm = {**cold, "name": "arm", "target": {"arm": "merchant:1"}}
    assert not refuses(fz.check_caps_above_floors, [Constraint(**cap), Constraint(**arm)])
    assert refuses(
        fz.check_caps_above_floors, [Constraint(**cap), Constraint(**arm)], merchant_group
    )


def one_arm_partners(group: str) -> frozenset[str] | None:
    """A world's fixed groups: a partner is its one arm, the Mini Shop two merchants."""
    if group == "mini_shop":
        return frozenset({"merchant:1", "merchant:2"})
    return frozenset({group})


@pytest.mark.parametrize("floored", [{"group": "taobao"}, {"cold_in_group": "taobao"}])
def test_an_arm_cap_below_a_floor_on_a_group_of_that_one_arm_is_refused(floored):
    """The mirror of a group cap below a floor on its arm: where the group is known to be
    exactly the capped arm, the floor can only be met on that arm, above its cap."""
    sched = {"start": "2025-10-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    cap = Constraint(name="cap", kind="cap", target={"arm": "taobao"},
                     schedule={**sched, "start_value": 0.1})  # fmt: skip
    floor = Constraint(name="floor", kind="floor", target=floored,
                       schedule={**sched, "start_value": 0.5})  # fmt: skip
    with pytest.raises(ValueError, match=r"cap 'cap' \(0.100\) is below floor 'floor' \(0.500\)"):
        fz.check_caps_above_floors([cap, floor], lambda arm: arm, one_arm_partners)
    # the group's arms unknown (a serving registry takes new arms): not refused
    assert not refuses(fz.check_caps_above_floors, [cap, floor])
    # a cap at or above the floor, or on one arm of a group of several, is feasible
    high = cap.model_copy(update={"schedule": floor.schedule})
    fz.check_caps_above_floors([high, floor], lambda arm: arm, one_arm_partners)
    merchant = Constraint(name="cap", kind="cap", target={"arm": "merchant:1"},
                          schedule={**sched, "start_value": 0.1})  # fmt: skip
    mini = Constraint(name="floor", kind="floor", target={"group": "mini_shop"},
                      schedule={**sched, "start_value": 0.5})  # fmt: skip
    fz.check_caps_above_floors([merchant, mini], lambda arm: "mini_shop", one_arm_partners)


def test_caps_covering_the_catalogue_agree_with_brute_force_both_ways():
    refused, accepted = compare(
        fz.check_caps_cover, naive.caps_leave_no_room, 300, 3, ["cap"], (3, 8), (GROUPS,)
    )
    assert refused >= 30 and accepted >= 30, (refused, accepted)


def _floor(name, value, scope=None, **schedule):
    sched = {"start": "2025-10-01T00:00:00Z", "end": "2026-01-01T00:00:00Z",
             "start_value": value, **schedule}  # fmt: skip
    return {"name": name, "kind": "floor", "target": {"group": name},
            "scope": scope or {}, "schedule": sched}  # fmt: skip


def test_twenty_scope_attributes_make_one_class_not_two_million():
    """Each floor scoped on its own attribute: 2^20 value combinations, one class."""
    items = [_floor(f"g{i}", 0.04, {f"attr{i}": ["x"]}) for i in range(20)]
    spec = parse_config(ConstraintSet, {"constraints": items})
    classes = fz.scope_classes(spec.constraints)
    assert len(classes) == 1
    assert classes[0][0] == (1 << 20) - 1
    items.append(_floor("late", 0.3, {"attr3": ["x"], "attr17": ["x"]}))
    with pytest.raises(ConfigError, match=r"sum to 1.100 > 1 .* for requests \{'attr0': 'x'"):
        parse_config(ConstraintSet, {"constraints": items})


def test_disjoint_scope_values_make_one_class_per_value():
    items = [_floor(f"g{i}", 0.9, {"category": [f"cat{i}"]}) for i in range(40)]
    spec = parse_config(ConstraintSet, {"constraints": items})
    assert len(fz.scope_classes(spec.constraints)) == 40


def test_entangled_scopes_are_refused_not_accepted_unchecked():
    """Pairs of attributes with two values each: 2^16 classes of requests, past the bound."""
    items = [
        _floor(f"g{i}{v}", 0.01, {f"a{i}": [v], f"a{(i + 1) % 16}": [v]})
        for i in range(16)
        for v in ("p", "q")
    ]
    with pytest.raises(ConfigError, match="too entangled to verify"):
        parse_config(ConstraintSet, {"constraints": items})


def test_long_step_schedules_are_checked_at_every_stair():
    """Two 10,000-step floors trading places (their sum stays 0.9999, their bound is 2),
    then a third one in the last hour."""
    up = _floor("up", 0.0, end_value=0.9999, shape="step", steps=10_000)
    down = _floor("down", 0.9999, end_value=0.0, shape="step", steps=10_000)
    parse_config(ConstraintSet, {"constraints": [up, down]})
    bump = _floor("bump", 0.01, start="2025-12-31T23:00:00Z")
    with pytest.raises(
        ConfigError, match=r"\['up', 'down', 'bump'\] sum to 1.010 > 1 at 2025-12-31T23:00"
    ):
        parse_config(ConstraintSet, {"constraints": [up, down, bump]})


def test_size_bounds_are_config_errors():
    too_many = [_floor(f"g{i}", 0.01) for i in range(63)]
    with pytest.raises(ConfigError, match="at most 62 items"):
        parse_config(ConstraintSet, {"constraints": too_many})
    wide = _floor("w", 0.1, {"category": [f"v{i}" for i in range(257)]})
    with pytest.raises(ConfigError, match="at most 256 items"):
        parse_config(ConstraintSet, {"constraints": [wide]})
    deep = _floor("d", 0.1, {f"a{i}": ["x"] for i in range(33)})
    with pytest.raises(ConfigError, match="at most 32 items"):
        parse_config(ConstraintSet, {"constraints": [deep]})
    steps = _floor("s", 0.1, shape="step", steps=10_001)
    with pytest.raises(ConfigError, match="less than or equal to 10000"):
        parse_config(ConstraintSet, {"constraints": [steps]})


@pytest.mark.parametrize("ramp", ["000500", "000002"])
def test_floors_past_one_on_a_sub_millisecond_ramp_are_refused(ramp):
    """The grid looks beside breakpoints by at most half the shortest span: a ramp shorter
    than 1 ms is still looked at inside, where the floors sum past 1."""
    ramp_up = _floor("douyin", 0.0, start="2025-10-02T00:00:00Z",
                     end=f"2025-10-02T00:00:00.{ramp}Z", end_value=1.0, shape="linear")  # fmt: skip
    with pytest.raises(ConfigError, match=r"floors \['taobao', 'douyin'\] sum to 1\.[1-4]"):
        parse_config(ConstraintSet, {"constraints": [_floor("taobao", 0.6), ramp_up]}, "test")
