"""Exact propensities through the constraint layer, usable logs, schedules, cold start,
tilts, debt carrying and atomic contract changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from allocator import ConfigError, InvalidInputError
from allocator.constraints import ConstraintSet
from tests.worlds.contracts import T0, constrained, run, world

START = datetime.fromtimestamp(T0, tz=UTC)


def sched(value, days=30, end_value=None, shape="constant"):
    out = {
        "start": START.isoformat(),
        "end": (START + timedelta(days=days)).isoformat(),
        "start_value": value,
        "shape": shape,
    }
    if end_value is not None:
        out["end_value"] = end_value
    return out


def group_floor(name, group, value, **kw):
    return {
        "name": name,
        "kind": "floor",
        "target": {"group": group},
        "schedule": sched(value),
        **kw,
    }


@pytest.mark.heavy
def test_frequencies_match_propensities_with_constraint_mixing():
    """Per-arm counts vs Σ propensities (a martingale check that holds for adaptive p)."""
    reg, policy, partners = world(3, adversarial=False, seed=3)
    spec = {"window": 500, "constraints": [
        group_floor("f0", "partner0", 0.3),
        group_floor("f1", "partner1", 0.2, scope={"category": ["food", "toys"]}),
        {"name": "tilt", "kind": "tilt", "target": {"group": "mini_shop"}, "schedule": sched(1.7)},
        {"name": "cap", "kind": "cap", "target": {"group": "partner2"}, "schedule": sched(0.1)},
    ]}  # fmt: skip
    cp = constrained(policy, spec)
    rng = np.random.default_rng(4)
    ctr = rng.uniform(0.02, 0.3, reg.n_arms)
    n = 100_000 if pytest.slow_enabled else 20_000  # type: ignore[attr-defined]
    log = run(
        cp,
        reg,
        partners,
        n,
        rng,
        np.array([0.9, 0.8, 0.9]),
        20 * 86400,
        ctr,
        keep_probabilities=True,
    )
    counts = np.bincount(log.arms, minlength=reg.n_arms)
    cand = np.concatenate(log.candidates)
    p = np.concatenate(log.probabilities)
    expected = np.bincount(cand, weights=p, minlength=reg.n_arms)
    variance = np.bincount(cand, weights=p * (1 - p), minlength=reg.n_arms)
    ratio = np.abs(counts - expected) / (5 * np.sqrt(variance) + 1)
    print(f"worst |count - Σp| / 5σ = {ratio.max():.3f}")
    assert (ratio <= 1).all()
    chosen_p = np.array(
        [
            pr[np.flatnonzero(c == a)[0]]
            for pr, c, a in zip(log.probabilities, log.candidates, log.arms, strict=True)
        ]
    )
    np.testing.assert_array_equal(chosen_p, log.propensities)


@pytest.mark.heavy
def test_ips_of_uniform_policy_from_constrained_logs_is_within_3_percent():
    reg, policy, partners = world(3, adversarial=False, seed=5)
    spec = {"window": 1000, "constraints": [
        group_floor("f0", "partner0", 0.25),
        group_floor("f1", "partner1", 0.15),
        {"name": "tilt", "kind": "tilt", "target": {"group": "mini_shop"}, "schedule": sched(2.0)},
    ]}  # fmt: skip
    cp = constrained(policy, spec)
    rng = np.random.default_rng(6)
    ctr = rng.uniform(0.2, 0.6, reg.n_arms)
    n = 60_000
    log = run(cp, reg, partners, n, rng, np.array([0.9, 0.7, 0.8]), 20 * 86400, None)
    rewards = (rng.random(n) < ctr[log.arms]).astype(float)
    sizes = np.array([c.size for c in log.candidates])
    ips = np.mean(rewards / (sizes * log.propensities))
    truth = np.mean([ctr[c].mean() for c in log.candidates])
    print(f"IPS {ips:.4f} vs truth {truth:.4f} ({(ips / truth - 1) * 100:+.2f}%)")
    assert abs(ips / truth - 1) < 0.03


@pytest.mark.heavy
def test_decaying_floor_tracks_its_schedule_day_by_day():
    reg, policy, partners = world(2)
    spec = {"window": 1000, "constraints": [{
        "name": "taobao_protected", "kind": "floor", "target": {"group": "partner0"},
        "schedule": sched(0.4, days=10, end_value=0.0, shape="linear"),
    }]}  # fmt: skip
    cp = constrained(policy, spec)
    per_day = 2000
    log = run(
        cp, reg, partners, 10 * per_day, np.random.default_rng(7), np.array([1.0, 1.0]), 10 * 86400
    )
    c = cp.constraints.constraints[0]
    for day in range(10):
        sl = slice(day * per_day, (day + 1) * per_day)
        share = np.mean(log.groups[sl] == "partner0")
        target = np.mean([c.schedule.value_at(t) for t in log.times[sl]])
        print(f"day {day}: served {share:.3f} target {target:.3f}")
        assert share == pytest.approx(target, abs=0.02)


def test_cold_arms_share_a_floor_until_warm_or_too_old():
    reg, policy, _partners = world(1, n_merchants=6)
    spec = {"window": 100, "constraints": [{
        "name": "cold_start", "kind": "floor",
        "target": {"cold_in_group": "mini_shop", "n_min": 3, "max_age_s": 3600.0},
        "schedule": sched(0.5),
    }]}  # fmt: skip
    cp = constrained(policy, spec)
    # Warm every merchant but one: the floor then belongs to merchant:5 alone.
    for a in reg.lookup([f"merchant:{i}" for i in range(5)]):
        for _ in range(3):
            cp.update(int(a), 1.0)
    cand = reg.members("mini_shop")
    cold = int(reg.lookup(["merchant:5"])[0])
    c = cp.decide(cand, timestamp=T0)
    p = cp.probabilities
    assert p[list(cand).index(cold)] == pytest.approx(0.5)
    assert c.adjusted_by == ("cold_start",)
    # Past max_age the arm is no longer cold, whatever its count.
    cp.decide(cand, timestamp=T0 + 3601)
    assert cp.probabilities[list(cand).index(cold)] < 1e-6


def test_tilt_effect_on_propensities_is_exact():
    reg, policy, _partners = world(2, adversarial=False, seed=1)
    cand = np.arange(reg.n_arms, dtype=np.int64)
    policy.decide(cand)
    base = policy.probabilities
    # Same stream state for both: a second policy from the same seed.
    _reg2, policy2, _ = world(2, adversarial=False, seed=1)
    spec = {
        "constraints": [
            {"name": "t", "kind": "tilt", "target": {"group": "mini_shop"}, "schedule": sched(3.0)}
        ]
    }
    cp = constrained(policy2, spec)
    cp.decide(cand, timestamp=T0)
    mini = np.array([reg.group_of(int(a)) == "mini_shop" for a in cand])
    tilted = np.where(mini, base * 3.0, base)
    np.testing.assert_allclose(cp.probabilities, tilted / tilted.sum(), rtol=1e-12)


@pytest.mark.parametrize("boost", [0.0, 1e-320, 1e300, 1.7e308])
def test_tilts_of_zero_or_huge_keep_an_exact_distribution(boost):
    """The tilted distribution is base·w / Σ base·w; a tilt that would leave no mass (0 on
    a request of target arms only) leaves the request untilted instead of dividing by 0."""
    reg, policy, _partners = world(2, adversarial=False, seed=1)
    _reg2, policy2, _ = world(2, adversarial=False, seed=1)
    spec = {"constraints": [
        {"name": "t", "kind": "tilt", "target": {"group": "mini_shop"}, "schedule": sched(boost)}
    ]}  # fmt: skip
    cp = constrained(policy2, spec)
    every = np.arange(reg.n_arms, dtype=np.int64)
    only_mini = every[[reg.group_of(int(a)) == "mini_shop" for a in every]]
    for cand in (only_mini, every):
        policy.decide(cand)
        base = policy.probabilities
        cp.decide(cand, timestamp=T0)
        p = cp.probabilities
        assert np.isfinite(p).all() and (p >= 0).all() and p.sum() == pytest.approx(1, abs=1e-12)
        mini = np.array([reg.group_of(int(a)) == "mini_shop" for a in cand])
        w = np.where(mini, min(boost, 1.0), 1.0 if boost <= 1 else 1.0 / boost)
        want = base * w / (base * w).sum() if (base * w).sum() > 0 else base
        np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize(("on_missing", "expect_debt"), [("skip", False), ("carry", True)])
def test_missing_target_skips_or_carries_debt(on_missing, expect_debt):
    reg, policy, _partners = world(2)
    spec = {"constraints": [group_floor("f", "partner0", 0.3, on_missing=on_missing)]}
    cp = constrained(policy, spec)
    only_merchants = reg.members("mini_shop")
    for i in range(50):
        cp.decide(only_merchants, timestamp=T0 + i)
    report = cp.report()[0]
    assert report.deficit == pytest.approx(15.0 if expect_debt else 0.0)
    assert report.impressions == (50 if expect_debt else 0)
    # Debt raises the floor probability once the partner is eligible again.
    cand = np.concatenate([reg.lookup(["partner0"]), only_merchants])
    cp.decide(cand, timestamp=T0 + 60)
    expected = min(1.0, 0.3 + cp.constraints.eta * (15.0 if expect_debt else 0.0))
    assert cp.probabilities[0] == pytest.approx(expected)


def test_backstop_forces_and_flags():
    reg, policy, _partners = world(2)
    spec = {"backstop": 2.0, "eta": 0.001, "constraints": [group_floor("f", "partner0", 0.5)]}
    cp = constrained(policy, spec)
    cand = np.concatenate([reg.lookup(["partner0"]), reg.members("mini_shop")])
    forced = [cp.decide(cand, timestamp=T0 + i) for i in range(400)]
    flagged = [c for c in forced if c.forced]
    assert flagged and all(c.forced_by == "f" and c.arm_index == cand[0] for c in flagged)
    assert all(c.propensity == 1.0 for c in flagged)
    assert cp.report()[0].backstops == len(flagged)
    assert cp.report()[0].deficit < 3.0


def test_reconfigure_carries_unchanged_queues_and_rejects_bad_sets():
    reg, policy, partners = world(2)
    spec = {"constraints": [group_floor("a", "partner0", 0.3), group_floor("b", "partner1", 0.2)]}
    cp = constrained(policy, spec)
    cand = reg.members("mini_shop")  # partners absent: no queue movement under "skip"...
    cand = np.concatenate([reg.lookup(partners), cand])
    for i in range(300):
        cp.decide(cand, timestamp=T0 + i)
    before = {r.name: r for r in cp.report()}
    learned = policy.posterior(np.arange(reg.n_arms))
    new = ConstraintSet.model_validate({"constraints": [
        group_floor("a", "partner0", 0.3),           # unchanged: carried over
        group_floor("b", "partner1", 0.1),           # changed: starts afresh
    ]})  # fmt: skip
    cp.set_constraints(new)
    after = {r.name: r for r in cp.report()}
    assert after["a"] == before["a"]
    assert after["b"].impressions == 0
    np.testing.assert_array_equal(
        np.array(policy.posterior(np.arange(reg.n_arms))), np.array(learned)
    )
    bad = ConstraintSet.model_validate({"constraints": [group_floor("z", "ghost", 0.1)]})
    with pytest.raises(ConfigError, match="'z': unknown target"):
        cp.set_constraints(bad)
    assert cp.constraints is new
    cp.decide(cand, timestamp=T0 + 301)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "timestamp is required when contracts are configured"),
        ({"timestamp": None}, "timestamp is required"),
        ({"timestamp": float("nan")}, "timestamp = nan"),
        ({"timestamp": datetime(2025, 10, 1)}, "no time zone"),
        ({"timestamp": T0, "attrs": ["food"]}, "attrs must be a mapping"),
        ({"timestamp": T0, "attrs": {"category": 3}}, r"attrs\['category'\] = 3"),
    ],
)
def test_bad_requests_are_typed_errors_and_leave_state(kwargs, match):
    reg, policy, partners = world(2)
    cp = constrained(
        policy, {"constraints": [group_floor("a", "partner0", 0.3, scope={"category": ["food"]})]}
    )
    cand = np.concatenate([reg.lookup(partners), reg.members("mini_shop")])
    stream = policy.state.stream.copy()
    with pytest.raises(InvalidInputError, match=match):
        cp.decide(cand, **kwargs)
    np.testing.assert_array_equal(policy.state.stream, stream)
    assert cp.report()[0].impressions == 0


def test_a_batch_without_times_is_refused_under_contracts_only():
    """A missing time would be 1970: schedules off and cold-start clocks started then."""
    reg, policy, partners = world(2)
    cp = constrained(policy, {"constraints": [group_floor("a", "partner0", 0.3)]})
    cand = np.concatenate([reg.lookup(partners), reg.members("mini_shop")])
    ptr, idx = np.array([0, cand.shape[0]]), cand
    stream = policy.state.stream.copy()
    with pytest.raises(InvalidInputError, match="timestamp is required"):
        cp.decide_batch(ptr, idx)
    np.testing.assert_array_equal(policy.state.stream, stream)
    assert cp.report()[0].impressions == 0
    cp.decide_batch(ptr, idx, draw=False)  # probabilities only: no contract applies
    cp.set_constraints(ConstraintSet())
    assert cp.decide_batch(ptr, idx).timestamps[0] == 0.0
    assert cp.decide(cand).timestamp == 0.0
