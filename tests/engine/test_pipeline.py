"""One pipeline: the single and the batch entry make identical decisions, every family, with
and without contracts; snapshots resume the exact decision sequence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from allocator import Engine, InvalidInputError
from allocator.config import (
    BetaBernoulliConfig,
    LinearGaussianConfig,
    NormalGammaConfig,
    SharedLinearConfig,
)
from allocator.constraints import ConstraintSet
from allocator.registry import ArmRegistry
from tests.requests import random_requests

T0 = 1_760_000_000.0
PARTNERS = ("taobao", "douyin", "pdd")
N_MERCHANTS = 30
CATEGORIES = np.array(["food", "toys", "apparel"])

CONFIGS = {
    "beta": BetaBernoulliConfig(epsilon=0.05),
    "normal_gamma": NormalGammaConfig(epsilon=0.05, half_life=500),
    "linear": LinearGaussianConfig(n_features=3, epsilon=0.05, max_candidates=64),
    "shared": SharedLinearConfig(
        n_context_features=3, n_arm_features=2, epsilon=0.05, max_candidates=64
    ),
}


def contracts() -> ConstraintSet:
    start = datetime.fromtimestamp(T0, tz=UTC)

    def sched(v, end=None):
        out = {
            "start": start.isoformat(),
            "end": (start + timedelta(days=2)).isoformat(),
            "start_value": v,
        }
        if end is not None:
            out.update(end_value=end, shape="linear")
        return out

    return ConstraintSet.model_validate({"constraints": [
        {"name": "tb_floor", "kind": "floor", "target": {"group": "taobao"},
         "schedule": sched(0.3, 0.1), "scope": {"category": ["food", "toys"]}},
        {"name": "dy_cap", "kind": "cap", "target": {"group": "douyin"}, "schedule": sched(0.2)},
        {"name": "ms_tilt", "kind": "tilt", "target": {"group": "mini_shop"},
         "schedule": sched(1.5)},
        {"name": "cold", "kind": "floor",
         "target": {"cold_in_group": "mini_shop", "n_min": 20, "max_age_s": 3600},
         "schedule": sched(0.05)},
    ]})  # fmt: skip


def build(kind: str, constrained: bool, seed: int = 3) -> Engine:
    ids = [*PARTNERS] + [f"m{i}" for i in range(N_MERCHANTS)]
    groups = [*PARTNERS] + ["mini_shop"] * N_MERCHANTS
    reg = ArmRegistry.build(ids, groups)
    feats = None
    if kind == "shared":
        feats = np.column_stack([np.ones(len(ids)), np.linspace(0, 1, len(ids))])
    return Engine(CONFIGS[kind], contracts() if constrained else None, reg, seed, feats)


def traffic(n: int, kind: str, seed: int = 0):
    """n requests: CSR candidates, contexts, times, categories, and rewards per arm."""
    rng = np.random.default_rng(seed)
    n_arms = len(PARTNERS) + N_MERCHANTS
    ptr, idx = random_requests(rng, n, n_arms, min_size=2, max_size=8)
    xs = rng.normal(size=(n, 3)) if kind in ("linear", "shared") else None
    times = T0 + np.sort(rng.uniform(0, 86_400, n))
    cats = CATEGORIES[rng.integers(0, 3, n)]
    ctr = rng.uniform(0.02, 0.3, n_arms)
    return ptr, idx, xs, times, cats, ctr


def run_single(engine: Engine, ptr, idx, xs, times, cats, ctr, chunk):
    rng = np.random.default_rng(11)
    out = []
    n = ptr.shape[0] - 1
    for lo in range(0, n, chunk):
        arms = []
        for r in range(lo, min(n, lo + chunk)):
            d = engine.decide(
                idx[ptr[r] : ptr[r + 1]], None if xs is None else xs[r],
                {"category": str(cats[r])}, float(times[r]),
            )  # fmt: skip
            out.append((d.arm_index, d.propensity, d.forced_by, d.adjusted_by))
            arms.append(d.arm_index)
        a = np.array(arms)
        engine.update_batch(a, (rng.random(a.size) < ctr[a]).astype(float),
                            None if xs is None else xs[lo : lo + a.size])  # fmt: skip
    return out


def run_batch(engine: Engine, ptr, idx, xs, times, cats, ctr, chunk):
    rng = np.random.default_rng(11)
    out = []
    n = ptr.shape[0] - 1
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        p = ptr[lo : hi + 1] - ptr[lo]
        d = engine.decide_batch(
            p, idx[ptr[lo] : ptr[hi]], None if xs is None else xs[lo:hi], times[lo:hi],
            {"category": cats[lo:hi]},
        )  # fmt: skip
        for r in range(hi - lo):
            out.append((int(d.arms[r]), float(d.propensities[r]), d.forced_by(r), d.adjusted_by(r)))
        engine.update_batch(d.arms, (rng.random(hi - lo) < ctr[d.arms]).astype(float),
                            None if xs is None else xs[lo:hi])  # fmt: skip
    return out


@pytest.mark.parametrize("n", [pytest.param(10_000, marks=pytest.mark.heavy), 400])
@pytest.mark.parametrize("constrained", [False, True], ids=["free", "contracts"])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_single_and_batch_entries_decide_identically(kind, constrained, n):
    ptr, idx, xs, times, cats, ctr = traffic(n, kind)
    chunk = 250
    single = run_single(build(kind, constrained), ptr, idx, xs, times, cats, ctr, chunk)
    batch = run_batch(build(kind, constrained), ptr, idx, xs, times, cats, ctr, chunk)
    assert single == batch
    if constrained:
        assert any(s[3] for s in single), "contracts never moved mass: the test is vacuous"


@pytest.mark.parametrize("n", [pytest.param(10_000, marks=pytest.mark.heavy), 300])
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_snapshot_resumes_the_exact_decision_sequence(kind, n):
    ptr, idx, xs, times, cats, ctr = traffic(2 * n, kind, seed=4)
    first = np.searchsorted(np.arange(2 * n), n)
    engine = build(kind, True)
    run_batch(engine, ptr[: first + 1], idx[: ptr[first]], None if xs is None else xs[:first],
              times[:first], cats[:first], ctr, 100)  # fmt: skip
    arrays, meta = engine.export_state()
    restored = Engine.restore(engine.policy.config, engine.constraints, 3, arrays, meta)
    tail = (ptr[first:] - ptr[first], idx[ptr[first] :], None if xs is None else xs[first:],
            times[first:], cats[first:], ctr)  # fmt: skip
    assert run_batch(engine, *tail, 100) == run_batch(restored, *tail, 100)


def test_draw_false_leaves_stream_and_contracts_untouched():
    engine = build("beta", True)
    ptr, idx, _, times, cats, _ = traffic(50, "beta")
    stream = engine.policy.state.stream.copy()
    queues = engine.contracts.st_f.copy()
    d = engine.decide_batch(ptr, idx, None, times, {"category": cats}, draw=False)
    np.testing.assert_array_equal(engine.policy.state.stream, stream)
    np.testing.assert_array_equal(engine.contracts.st_f, queues)
    sums = np.add.reduceat(d.probabilities, ptr[:-1])
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)


def test_the_engine_owns_its_registry_and_a_bare_policy_refuses_unsynced_arms():
    engine = build("beta", False)
    with pytest.raises(InvalidInputError, match="belongs to an engine"):
        engine.registry.add(["sneaky"], "mini_shop")
    with pytest.raises(InvalidInputError, match="belongs to an engine"):
        engine.registry.retire(["m1"])
    assert not engine.registry.knows("sneaky")
    idx = engine.add_arms(["m_new"], "mini_shop")
    assert engine.decide(["m_new", "taobao"]).arm_index in (int(idx[0]), 0)
    # a bare policy over a registry changed behind its back refuses, then recovers on sync
    from allocator.policies import make_policy

    reg = ArmRegistry.build(["a", "b"], ["g", "g"])
    policy = make_policy(CONFIGS["beta"], reg, seed=0)
    reg.add(["c"], "g")
    with pytest.raises(InvalidInputError, match="call sync_arms"):
        policy.decide([0, 2])
    policy.sync_arms()
    assert policy.decide([0, 2]).arm_index in (0, 2)
