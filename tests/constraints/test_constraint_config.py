"""Conflicting or infeasible contract sets are rejected with errors naming the constraints."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import BetaBernoulliConfig, ConfigError, Engine, make_policy
from allocator.config import parse_config
from allocator.constraints import ConstraintSet
from allocator.constraints.config import schedule_value
from allocator.kernels import constraints as kc
from tests import naive
from tests.conftest import make_registry

START, END = "2025-10-01T00:00:00Z", "2025-12-31T00:00:00Z"


def floor(name, group, value, end_value=None, scope=None, start=START, end=END, kind="floor"):
    sched = {"start": start, "end": end, "start_value": value}
    if end_value is not None:
        sched.update(end_value=end_value, shape="linear")
    out = {"name": name, "kind": kind, "target": {"group": group}, "schedule": sched}
    if scope:
        out["scope"] = scope
    return out


def parse(items, **extra):
    return parse_config(ConstraintSet, {"constraints": items, **extra}, "contracts.yaml")


@pytest.mark.parametrize(
    ("items", "match"),
    [
        (
            [floor("a", "taobao", 0.6), floor("b", "douyin", 0.5)],
            r"floors \['a', 'b'\] sum to 1.100 > 1 at 2025-10-01T00:00:00\+00:00",
        ),
        (
            [
                floor("a", "taobao", 0.6, scope={"category": ["food"]}),
                floor("b", "douyin", 0.3),
                floor("c", "pinduoduo", 0.3, scope={"category": ["food", "toys"]}),
            ],
            r"floors \['a', 'b', 'c'\] sum to 1.200 > 1 .* for requests \{'category': 'food'\}",
        ),
        (
            [
                floor("early", "taobao", 0.7, start=START, end="2025-11-01T00:00:00Z"),
                floor("late", "douyin", 0.5, start="2025-10-20T00:00:00Z", end=END),
            ],
            r"floors \['early', 'late'\] sum to 1.200 > 1 at 2025-10-20",
        ),
        (
            [floor("f", "taobao", 0.3), floor("c", "taobao", 0.2, kind="cap")],
            r"cap 'c' \(0.200\) is below floor 'f' \(0.300\) on the same target",
        ),
        (
            [floor("e", "taobao", 0.3, scope={"slot": []})],
            r"constraint 'e': scope.slot is empty",
        ),
        ([floor("x", "taobao", 0.3), floor("x", "douyin", 0.1)], r"repeated: \['x'\]"),
        ([floor("s", "taobao", 1.3)], "a floor share must be in"),
        (  # compiled to int64: refused at config time, not an OverflowError at compile
            [{**floor("cold", "taobao", 0.3), "target": {"cold_in_group": "m", "n_min": 2**63}}],
            r"n_min\n? *: Input should be less than or equal to 9007199254740992",
        ),
        ([floor("u", "taobao", 0.3, end=START)], "is not after start"),
        (
            [floor("tz", "taobao", 0.3, start="2025-10-01T00:00:00")],
            "has no time zone",
        ),
    ],
)
def test_infeasible_or_conflicting_sets_name_the_constraints(items, match):
    with pytest.raises(ConfigError, match=match):
        parse(items)


def test_disjoint_scopes_and_times_may_each_be_large():
    parse(
        [
            floor("a", "taobao", 0.8, scope={"category": ["food"]}),
            floor("b", "douyin", 0.8, scope={"category": ["toys"]}),
            floor("c", "pinduoduo", 0.9, start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z"),
        ]
    )


def test_unknown_target_is_named_at_compile_time():
    reg = make_registry(3)
    pol = make_policy(BetaBernoulliConfig(), reg, seed=0)
    spec = parse([floor("ghost", "nowhere", 0.2)])
    with pytest.raises(ConfigError, match=r"constraint 'ghost': unknown target: unknown group"):
        Engine(pol, spec)


def test_group_cap_below_a_floor_on_one_of_its_arms_is_refused_at_compile_time():
    """The arm's group is known only to the registry: the set validates, the engine refuses
    it; the same floor on an arm of another group compiles."""
    reg = make_registry(3)
    reg.add(["taobao"], "taobao")
    arm_floor = {**floor("f", "taobao", 0.5), "target": {"arm": "taobao"}}
    spec = parse([floor("c", "taobao", 0.1, kind="cap"), arm_floor])
    with pytest.raises(ConfigError, match=r"cap 'c' \(0.100\) is below floor 'f' \(0.500\)"):
        Engine(make_policy(BetaBernoulliConfig(), reg, seed=0), spec)
    other = parse([floor("c", "g", 0.1, kind="cap"), arm_floor])
    reg2 = make_registry(3)
    reg2.add(["taobao"], "taobao")
    assert Engine(make_policy(BetaBernoulliConfig(), reg2, seed=0), other).constraints == other


@pytest.mark.parametrize("shape", ["constant", "linear", "step"])
def test_schedule_kernel_matches_reference(shape):
    ts = np.linspace(0.0, 99.999, 57)
    for t in ts:
        ref = naive.schedule(t, 0.0, 100.0, 0.4, 0.1, shape, 5)
        assert kc.schedule_value(t, 0.0, 100.0, 0.4, 0.1, kc_shape(shape), 5) == pytest.approx(
            ref, abs=1e-15
        )
        assert schedule_value(t, 0.0, 100.0, 0.4, 0.1, shape, 5) == pytest.approx(ref, abs=1e-15)
    many = schedule_value(ts, 0.0, 100.0, 0.4, 0.1, shape, 5)
    want = [naive.schedule(t, 0.0, 100.0, 0.4, 0.1, shape, 5) for t in ts]
    np.testing.assert_allclose(many, want, atol=1e-15)


def kc_shape(shape):
    return {"constant": kc.SHAPE_CONSTANT, "linear": kc.SHAPE_LINEAR, "step": kc.SHAPE_STEP}[shape]
