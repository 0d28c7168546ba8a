from __future__ import annotations

import numpy as np
import pytest

from allocator import (
    ArmRegistry,
    BetaBernoulliConfig,
    InvalidInputError,
    UnknownArmError,
    make_policy,
)


def test_ids_groups_and_indices_are_stable():
    reg = ArmRegistry(capacity=2)
    np.testing.assert_array_equal(reg.add(["taobao"], "taobao"), [0])
    np.testing.assert_array_equal(reg.add(["douyin"], "douyin"), [1])
    np.testing.assert_array_equal(reg.add(["merchant:10231", "merchant:7"], "mini_shop"), [2, 3])
    assert reg.capacity == 4 and reg.n_arms == 4
    assert reg.groups == ["taobao", "douyin", "mini_shop"]
    assert reg.arm_id(2) == "merchant:10231" and reg.group_of(3) == "mini_shop"
    np.testing.assert_array_equal(reg.lookup(["merchant:7", "taobao"]), [3, 0])
    np.testing.assert_array_equal(reg.members("mini_shop"), [2, 3])


def test_retire_and_reactivate_keep_indices():
    reg = ArmRegistry()
    reg.add(["a", "b", "c"], "g")
    reg.retire(["b"])
    with pytest.raises(UnknownArmError, match="arm 'b' at position 1 is retired"):
        reg.lookup(["a", "b"])
    np.testing.assert_array_equal(reg.lookup(["b"], allow_retired=True), [1])
    np.testing.assert_array_equal(reg.add(["d", "b"], "g"), [3, 1])
    assert reg.active[:4].all()


@pytest.mark.parametrize(
    ("ids", "group", "match"),
    [
        (["a"], "g", "'a' is already registered"),
        (["x", "x"], "g", r"ids\[1\] = .x. repeats an earlier id"),
        ([""], "g", "non-empty string"),
        (["y"], "", "group must be a non-empty string"),
        (["y", "z\ud800"], "g", r"ids\[1\] = 'z\\ud800': expected UTF-8 text"),
        (["y"], "g\udfff", r"group must be a non-empty string of UTF-8 text, got 'g\\udfff'"),
    ],
)
def test_bad_adds(ids, group, match):
    reg = ArmRegistry()
    reg.add(["a"], "g")
    with pytest.raises(InvalidInputError, match=match):
        reg.add(ids, group)
    assert reg.n_arms == 1


def test_unknown_ids():
    reg = ArmRegistry()
    reg.add(["a"], "g")
    with pytest.raises(UnknownArmError, match="unknown arm id 'zz' at position 0"):
        reg.lookup(["zz"])
    with pytest.raises(UnknownArmError, match="unknown group 'h'"):
        reg.group_code("h")


@pytest.mark.slow
def test_million_arms_capacity_and_runtime_changes_keep_other_state():
    reg = ArmRegistry(capacity=1 << 20)
    reg.add([f"merchant:{i}" for i in range(1_000_000)], "mini_shop")
    pol = make_policy(BetaBernoulliConfig(), reg, seed=0)
    assert pol.bank_rows * reg.capacity <= BetaBernoulliConfig().bank_max_cells
    pol.update_batch(np.arange(0, 1000, dtype=np.int64), np.ones(1000))
    pol.refresh()
    before = pol.posterior(np.arange(1000))
    bank_before = pol.state.bank[:1000].copy()
    reg.retire(["merchant:5"])
    reg.add(["taobao"], "taobao")
    pol.sync_arms()
    np.testing.assert_array_equal(np.array(pol.posterior(np.arange(1000))), np.array(before))
    np.testing.assert_array_equal(pol.state.bank[:1000], bank_before)
    cand = np.array([1_000_000, 3, 5], dtype=np.int64)
    with pytest.raises(UnknownArmError, match="retired"):
        pol.decide(cand)
    assert pol.decide(cand[:2]).arm_index in (1_000_000, 3)
