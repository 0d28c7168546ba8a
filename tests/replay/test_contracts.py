"""Constrained policies in replay: contracts on the logged timeline (times, request
attributes), queues advanced by the accepted logged actions (nonstationary replay) or by the
target's expected service (a frozen target), and refusals of logs that cannot carry them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from allocator import ArmRegistry, BetaBernoulliConfig, Engine, make_policy
from allocator.config import BetaPrior
from allocator.constraints import ConstraintSet
from allocator.errors import InvalidInputError
from allocator.replay import LoggedData, evaluate, replay_nonstationary, target_distribution
from tests.worlds.contracts import CATEGORIES, T0, run

START = datetime.fromtimestamp(T0, tz=UTC)
DAYS = 20.0


def _at(day: float) -> str:
    return (START + timedelta(days=day)).isoformat()


def contracts(floor_end_day: float = 12.0, shape: str = "linear") -> ConstraintSet:
    """A decaying partner0 floor in food and toys, a partner1 cap, a Mini Shop tilt and a
    cold-start floor: every kind of contract, a scope and a schedule that ends in the log."""
    return ConstraintSet.model_validate({"window": 200, "backstop": 20, "constraints": [
        {"name": "p0_floor", "kind": "floor", "target": {"group": "partner0"},
         "scope": {"category": ["food", "toys"]},
         "schedule": {"start": _at(0), "end": _at(floor_end_day), "start_value": 0.4,
                      "end_value": 0.1, "shape": shape}},
        {"name": "p1_cap", "kind": "cap", "target": {"group": "partner1"},
         "schedule": {"start": _at(0), "end": _at(DAYS), "start_value": 0.1}},
        {"name": "tilt", "kind": "tilt", "target": {"group": "mini_shop"},
         "schedule": {"start": _at(0), "end": _at(DAYS), "start_value": 1.5}},
        {"name": "cold", "kind": "floor", "target": {"cold_in_group": "mini_shop", "n_min": 5,
         "max_age_s": 3 * 86400}, "schedule": {"start": _at(0), "end": _at(DAYS),
                                              "start_value": 0.05}},
    ]})  # fmt: skip


def _registry() -> ArmRegistry:
    reg = ArmRegistry()
    for name in ("partner0", "partner1"):
        reg.add([name], name)
    reg.add([f"merchant:{i}" for i in range(5)], "mini_shop")
    return reg


def frozen_engine(spec: ConstraintSet, seed: int = 0) -> Engine:
    """Greedy with ε whose decisions never move (no refresh within a test): the contracts
    alone change its distribution from round to round."""
    cfg = BetaBernoulliConfig(
        rule="greedy", epsilon=0.2, refresh_every=10**9,
        group_priors={"partner0": BetaPrior(alpha=1, beta=50),
                      "partner1": BetaPrior(alpha=20, beta=20),
                      "mini_shop": BetaPrior(alpha=10, beta=20)},
    )  # fmt: skip
    return Engine(make_policy(cfg, _registry(), seed), spec)


def logged(engine: Engine, n: int, seed: int) -> LoggedData:
    """``engine``'s own log: every candidate's probability, times and categories."""
    rng = np.random.default_rng(seed)
    reg = engine.registry
    log = run(engine, reg, ["partner0", "partner1"], n, rng, np.array([0.9, 0.8]),
              DAYS * 86400.0, keep_probabilities=True)  # fmt: skip
    sizes = np.array([c.size for c in log.candidates])
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return LoggedData(
        arm_ids=tuple(reg.all_ids()), actions=log.arms,
        rewards=(rng.random(n) < 0.3).astype(float), pscores=log.propensities,
        arm_groups=tuple(reg.group_of(i) for i in range(reg.n_arms)),
        timestamps=log.times, cand_ptr=ptr, cand_idx=np.concatenate(log.candidates),
        cand_prob=np.concatenate(log.probabilities),
        attrs={"category": np.array(CATEGORIES)[log.categories]},
    )  # fmt: skip


def _unchanged(before: dict, after: dict) -> bool:
    return before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k], equal_nan=before[k].dtype.kind == "f") for k in before
    )


def test_a_constrained_policy_replayed_on_its_own_log_reproduces_every_distribution():
    """With c = 1 every event of its own log is accepted, so the replayed queues advance
    exactly as the logger's did: each event's target distribution is the logged one."""
    data = logged(frozen_engine(contracts()), 4000, 0)
    res = replay_nonstationary(frozen_engine(contracts(), seed=5), data,
                               np.random.default_rng(1), c=1.0)  # fmt: skip
    print(f"accepted {res.n_accepted} of {res.n_events}; max |w - 1| "
          f"{np.abs(res.trace.weights - 1).max():.2e}")  # fmt: skip
    assert res.n_accepted == res.n_events == data.n_rounds
    np.testing.assert_allclose(res.trace.weights, 1.0, atol=1e-9)
    # the contracts did shape the log, so a replay without them would not match
    plain = target_distribution(frozen_engine(contracts()).policy, data)
    assert np.abs(plain - data.cand_prob).max() > 0.1


def test_queues_left_unadvanced_would_not_reproduce_the_log():
    """The same replay with the floor ending at once differs: the test above can fail."""
    data = logged(frozen_engine(contracts()), 2000, 0)
    res = replay_nonstationary(frozen_engine(contracts(floor_end_day=0.5)), data,
                               np.random.default_rng(1), c=1.0)  # fmt: skip
    assert np.abs(res.trace.weights - 1.0).max() > 0.05


def test_frozen_constrained_target_matches_the_served_shares_in_expectation():
    """Scored on every round with expected-service queues, the target's mass on the
    floor's group in scope equals the share the engine serves online on the same traffic
    (within sampling noise of the online draws), and the engine is left untouched."""
    engine = frozen_engine(contracts())
    data = logged(frozen_engine(contracts(), seed=3), 6000, 2)
    before = engine.export_state()[0]
    prob = target_distribution(engine, data)
    after = engine.export_state()[0]
    assert _unchanged(before, after)
    ptr, idx = data.candidates()
    rows = np.repeat(np.arange(data.n_rounds), np.diff(ptr))
    p0 = np.bincount(rows, weights=prob * (idx == 0), minlength=data.n_rounds)
    online = data.actions == 0
    early = (data.timestamps < T0 + 6 * 86400) & np.isin(data.attrs["category"], ["food", "toys"])
    expected, served = p0[early].mean(), online[early].mean()
    sd = np.sqrt(served * (1 - served) / early.sum())
    print(f"partner0 share in scope, first 6 days: target {expected:.4f}, served {served:.4f}")
    assert abs(expected - served) < 4 * sd + 0.01
    plain = np.bincount(rows, weights=target_distribution(engine.policy, data) * (idx == 0))
    assert expected > plain[early].mean() + 0.15  # the floor binds: greedy alone gives ~0.1


def test_a_contract_change_is_a_different_target():
    """What-if: a constant floor of 0.4 kept to day 20 instead of day 12 gives partner0
    more mass in scope after day 12."""
    data = logged(frozen_engine(contracts()), 4000, 4)
    assert data.attrs is not None and data.timestamps is not None
    scope = np.isin(data.attrs["category"], ["food", "toys"])
    late = (data.timestamps > T0 + 13 * 86400) & scope
    ptr, idx = data.candidates()
    rows = np.repeat(np.arange(data.n_rounds), np.diff(ptr))
    shares = []
    for end in (12.0, DAYS):
        prob = target_distribution(frozen_engine(contracts(end, "constant")), data)
        shares.append(np.bincount(rows, weights=prob * (idx == 0), minlength=data.n_rounds))
    print(f"partner0 mass in scope after day 13: {shares[0][late].mean():.4f} (floor to day "
          f"12), {shares[1][late].mean():.4f} (to day 20)")  # fmt: skip
    assert shares[1][late].mean() > shares[0][late].mean() + 0.15
    ev = evaluate(data, frozen_engine(contracts()), estimators=("ips",),
                  rng=np.random.default_rng(0))  # fmt: skip
    assert 0.0 <= ev["ips"].low <= ev["ips"].value <= ev["ips"].high <= 1.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"timestamps": None}, "needs timestamps"),
        ({"attrs": None}, r"request attributes \['category'\]"),
        ({"attrs": {"slot": np.array(["top"] * 300)}}, r"carries \['slot'\]"),
    ],
)
def test_logs_without_what_the_contracts_read_are_refused_before_anything_learns(change, match):
    data = dataclasses.replace(logged(frozen_engine(contracts()), 300, 0), **change)
    engine = frozen_engine(contracts())
    before = engine.export_state()[0]
    with pytest.raises(InvalidInputError, match=match):
        replay_nonstationary(engine, data, np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match=match):
        target_distribution(engine, data)
    after = engine.export_state()[0]
    assert _unchanged(before, after)


def test_attrs_of_the_wrong_length_are_refused():
    data = logged(frozen_engine(contracts()), 100, 0)
    with pytest.raises(InvalidInputError, match=r"attrs\['category'\] has shape"):
        dataclasses.replace(data, attrs={"category": data.attrs["category"][:50]})
