"""The factored value family behind the Allocator: event outcomes through update,
update_many and expiry, rejection without change, and save/load."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from allocator import ConfigError, InvalidInputError
from allocator.serving import Allocator, UpdateStatus
from tests.serving.helpers import T0, without_epoch

OBJECTIVE = {"order": 0.0, "gmv": 0.1, "take_rates": {"taobao": 0.03, "mini_shop": 0.05}}


def config(objective: dict[str, Any] | None = None) -> dict[str, Any]:
    arms: list[dict[str, Any]] = [{"id": p, "group": p} for p in ("taobao", "douyin")]
    arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(6)]
    for i, arm in enumerate(arms):
        arm["features"] = [1.0, i / len(arms)]
    policy = {"kind": "factored_value", "n_context_features": 3, "n_arm_features": 2,
              "objective": OBJECTIVE, "typical_order_value": 80.0}  # fmt: skip
    return {
        "engine": {"policy": policy, "objective": objective or OBJECTIVE},
        "arms": arms,
        "serving": {"reward_wait_s": 50.0, "feature_names": ["age", "tier", "referral"]},
    }


def outcome(i: int) -> dict[str, float]:
    click = float(i % 3 == 0)
    order = click * float(i % 2 == 0)
    return {"click": click, "order": order, "gmv": order * (40.0 + i % 70)}


def drive(alloc: Allocator, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """Decisions with every other one answered (by update or in pairs by update_many); the
    rest expire into the default outcome (no click)."""
    out, batch = [], []
    for i in range(lo, hi):
        x = [1.0, (i % 7) / 7.0, float(i % 2)]
        d = alloc.decide(["taobao", "douyin", "merchant:1", "merchant:4"], x, timestamp=T0 + i)
        out.append((without_epoch(d.decision_id), d.arm_id, d.propensity, d.model_version))
        if i % 4 == 0:
            assert alloc.update(d.decision_id, outcome(i), timestamp=T0 + i) is UpdateStatus.APPLIED
        elif i % 4 == 2:
            batch.append((d.decision_id, outcome(i)))
            if len(batch) == 2:
                alloc.update_many(batch)
                batch = []
    return out


@pytest.mark.heavy
def test_event_outcomes_are_learned_and_save_load_decides_identically(tmp_path):
    alloc = Allocator(config(), seed=5)
    drive(alloc, 0, 600)
    policy = alloc.policy
    assert policy.state.value_stats[0] > 0  # orders with values reached the value factor
    assert np.count_nonzero(policy.state.order_g) > 0
    alloc.save(tmp_path / "snap.npz")
    restored = Allocator.load(tmp_path / "snap.npz")
    assert drive(restored, 600, 2600) == drive(alloc, 600, 2600)


def test_warmup_leaves_no_trace():
    """Warm-up drives the kernels through the outcome entry points this family accepts
    (it refuses a scalar reward), then restores its state: decisions are unchanged."""
    warm, cold = Allocator(config(), seed=5), Allocator(config(), seed=5)
    warm.warmup()
    before = warm.snapshot_state()[0]
    for k, v in cold.snapshot_state()[0].items():
        np.testing.assert_array_equal(before[k], v, err_msg=k)
    assert drive(warm, 0, 300) == drive(cold, 0, 300)


@pytest.mark.parametrize(
    ("bad", "match"),
    [({"order": 1.0, "gmv": 50.0}, "an order without a click"),
     ({"click": 1.0, "gmv": 50.0}, "a value without an order"),
     ({"click": 0.5}, "expects 0 or 1")],
)  # fmt: skip
def test_inconsistent_events_are_refused_whole(bad, match):
    alloc = Allocator(config(), seed=5)
    x = [1.0, 0.5, 0.0]
    d1 = alloc.decide(["taobao", "merchant:1"], x, timestamp=T0)
    d2 = alloc.decide(["taobao", "merchant:1"], x, timestamp=T0 + 1)
    before = {k: v.copy() for k, v in alloc.snapshot_state()[0].items()}
    with pytest.raises(InvalidInputError, match=match):
        alloc.update(d1.decision_id, bad)
    with pytest.raises(InvalidInputError, match=match):
        alloc.update_many([(d1.decision_id, {"click": 1.0}), (d2.decision_id, bad)])
    for name, value in alloc.snapshot_state()[0].items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert alloc.update(d1.decision_id, {"click": 1.0}) is UpdateStatus.APPLIED


@pytest.mark.parametrize("gmv", [5e-324, 1e-310, 1e-300])
def test_a_tiny_order_value_is_learned_finitely(gmv):
    """The log value was log(gmv / typical_order_value): a subnormal gmv underflowed to 0
    and left -inf (then NaN) in the value factor's statistics (found by the fuzz test)."""
    alloc = Allocator(config(), seed=5)
    d = alloc.decide(["taobao", "merchant:1"], [1.0, 0.5, 0.0], timestamp=T0)
    assert alloc.update(d.decision_id, {"click": 1.0, "order": 1.0, "gmv": gmv}) is (
        UpdateStatus.APPLIED
    )
    alloc.policy.refresh()
    s = alloc.policy.state
    np.testing.assert_allclose(s.value_stats[1], (np.log(gmv) - np.log(80.0)) ** 2)
    for name, value in alloc.snapshot_state()[0].items():
        if name.startswith("policy."):  # (constraints use NaN for "never seen")
            assert value.dtype.kind != "f" or np.isfinite(value).all(), name
    assert alloc.decide(["taobao", "merchant:1"], [1.0, 0.5, 0.0], timestamp=T0 + 1).arm_id


def test_the_policy_objective_must_be_the_engines():
    with pytest.raises(ConfigError, match=r"must equal engine\.objective"):
        Allocator(config({**OBJECTIVE, "gmv": 0.2}), seed=5)
