"""The single-call fast path (bound entry points, the short-list id lookup, one-row
pending-table paths) decides and learns exactly what the general path does."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import Allocator, UnknownArmError, UpdateStatus
from allocator.kernels import idtable as kid
from allocator.registry import ArmRegistry
from tests.serving.helpers import BINARY, KINDS, T0, config, context_for

CANDS = ["taobao", "douyin", "merchant:0", "merchant:3", "merchant:5"]


@pytest.mark.parametrize("kind", KINDS)
def test_fast_single_calls_equal_the_general_path_with_learning(kind):
    """Same seed, same requests and outcomes: ``decide`` (a list of str) + ``update`` on one
    allocator, ``decide_many`` of one request (a numpy string array: the staged lookup and
    the batch pipeline) + ``update_many`` on the other. Every third decision gets feedback,
    the others expire one per call (reward_wait_s = 30 s, one request a second)."""
    cfg = config(kind, reward_wait_s=30.0, refresh_every_s=7.0)
    fast, general = Allocator(cfg, seed=9), Allocator(cfg, seed=9)
    rng = np.random.default_rng(0)
    reward = {"order": 1.0} if kind in BINARY else {"order": 1.0, "gmv": 20.0}
    for i in range(240):
        cands = CANDS[: 2 + i % 4]
        req = {"context": context_for(kind, i), "timestamp": T0 + i}
        a = fast.decide(cands, **req)
        b = general.decide_many([{"candidates": np.array(cands), **req}])
        assert (a.arm_index, a.propensity) == (int(b.arms[0]), float(b.propensities[0]))
        if i % 3 == 0:
            outcome = reward if rng.random() < 0.5 else {"order": 0.0}
            assert fast.update(a.decision_id, outcome) is UpdateStatus.APPLIED
            assert general.update_many([(b.decision_ids[0], outcome)]) == [UpdateStatus.APPLIED]
    counts = ("decisions", "updates", "expired", "refreshes", "pending")
    mf, mg = fast.metrics(), general.metrics()
    assert mf["expired"] > 100 and mf["refreshes"] > 10
    assert {k: mf[k] for k in counts} == {k: mg[k] for k in counts}
    sf, _ = fast.policy.export_state()
    sg, _ = general.policy.export_state()
    assert sf.keys() == sg.keys()
    for name in sf:
        np.testing.assert_array_equal(sf[name], sg[name], err_msg=name)


def _resolved(reg: ArmRegistry, ids: list[str] | np.ndarray) -> list[int] | str:
    try:
        return reg.lookup(ids).tolist()
    except UnknownArmError as err:
        return str(err)


@pytest.mark.parametrize("n", [1, 2, kid.SHORT - 1, kid.SHORT, kid.SHORT + 1, 40])
def test_short_and_staged_id_lookups_agree(n):
    """A list of up to ``SHORT`` ids takes the one-at-a-time path, a longer list and a numpy
    string array the staged one: the same indices, and the same error naming the first
    unknown or retired id and its position."""
    ids = [f"m{i}" for i in range(60)]
    reg = ArmRegistry.build(ids, ["mini_shop"] * 60)
    reg.retire(["m5"])
    rng = np.random.default_rng(n)
    query = [ids[i] for i in rng.choice(np.setdiff1d(np.arange(60), [5]), n, replace=False)]
    head = query[: n - 1]
    cases = {
        "found": query,
        "unknown last": [*head, "nope"],
        "retired last": [*head, "m5"],
        "unknown first of two": [*head, "nope", "m5"],
        "retired first of two": [*head, "m5", "nope"],
    }
    results = {name: _resolved(reg, q) for name, q in cases.items()}
    assert results["found"] == [int(q[1:]) for q in query]
    assert results["unknown last"] == f"unknown arm id 'nope' at position {n - 1}"
    assert results["retired last"] == f"arm 'm5' at position {n - 1} is retired"
    assert results["unknown first of two"] == results["unknown last"]
    assert results["retired first of two"] == results["retired last"]
    for name, q in cases.items():
        assert _resolved(reg, np.array(q)) == results[name], name
