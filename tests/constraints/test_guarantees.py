"""Floors and caps hold on every window against an adversarial policy; logs stay usable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.worlds.contracts import CATEGORIES, T0, constrained, run, window_slacks, world

START = datetime.fromtimestamp(T0, tz=UTC)


@st.composite
def contract_sets(draw):
    n_partners = draw(st.integers(2, 6))
    budget = draw(st.floats(0.3, 0.9))
    shares = np.array(
        draw(st.lists(st.floats(0.05, 1.0), min_size=n_partners, max_size=n_partners))
    )
    shares = shares / shares.sum() * budget
    items = []
    for i, share in enumerate(shares):
        sched = {
            "start": START.isoformat(),
            "end": (START + timedelta(days=draw(st.integers(5, 40)))).isoformat(),
            "start_value": float(share),
            "end_value": float(share * draw(st.sampled_from([0.0, 0.25, 1.0]))),
            "shape": draw(st.sampled_from(["constant", "linear", "step"])),
            "steps": draw(st.integers(2, 6)),
        }
        item = {
            "name": f"floor{i}",
            "kind": "floor",
            "target": {"group": f"partner{i}"},
            "schedule": sched,
        }
        if draw(st.booleans()):
            k = draw(st.integers(1, 2))
            item["scope"] = {"category": draw(st.permutations(CATEGORIES))[:k]}
        items.append(item)
    if draw(st.booleans()):
        cap = draw(st.floats(max(0.2, 1.0 - budget), 0.95))
        items.append({
            "name": "mini_shop_cap", "kind": "cap", "target": {"group": "mini_shop"},
            "schedule": {"start": START.isoformat(),
                         "end": (START + timedelta(days=30)).isoformat(), "start_value": cap},
        })  # fmt: skip
    eligibility = draw(st.lists(st.floats(0.3, 1.0), min_size=n_partners, max_size=n_partners))
    window = draw(st.sampled_from([500, 1000, 2000]))
    return n_partners, {"window": window, "constraints": items}, np.array(eligibility)


def check_windows(data, n_impressions, seed):
    n_partners, spec, eligibility = data
    reg, policy, partners = world(n_partners)
    cp = constrained(policy, spec)
    rng = np.random.default_rng(seed)
    log = run(cp, reg, partners, n_impressions, rng, eligibility, seconds=30 * 86400)
    window, bound = cp.constraints.window, cp.constraints.backstop + 2
    worst = np.inf
    reports = {r.name: r for r in cp.report()}
    for c in cp.constraints.constraints:
        gaps = window_slacks(log, c, window)
        if gaps.size == 0:
            continue
        worst = min(worst, gaps.min() / window)
        assert gaps.min() >= -bound, (c.name, gaps.min(), bound)
        assert reports[c.name].worst_window_slack == pytest.approx(gaps.min() / window, abs=1e-9)
    print(
        f"worst window slack {worst:+.4f} (allowed {-bound / window:+.4f}), "
        f"backstop rate {log.forced.mean():.5f}"
    )
    assert log.forced.mean() < 0.01
    return worst


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=contract_sets())
@pytest.mark.heavy
def test_every_window_holds_quick(data):
    check_windows(data, 12_000, seed=1)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=contract_sets())
def test_every_window_holds_50k(data):
    check_windows(data, 50_000, seed=2)
