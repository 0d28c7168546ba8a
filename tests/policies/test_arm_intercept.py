"""``arm_intercept``: the shared families' constant arm feature, appended by the policy.

The option must be exactly a column of ones given with every arm: the same state, the same
decisions and propensities to the bit as the model without the option fed that column,
for every family with arm features, through learning, snapshots, runtime additions and a
reconfiguration of the serving facade. Arms are still given ``n_arm_features`` values.
"""

from __future__ import annotations

import numpy as np
import pytest

from allocator import Allocator
from allocator.config import EngineConfig, FactoredValueConfig, SharedLinearConfig
from allocator.errors import ConfigError, InvalidInputError
from allocator.policies import make_policy, policy_class
from allocator.registry import ArmRegistry
from tests.requests import random_requests

DC = 3
#: two one-hot partners, then merchants with group, category and continuous features
FEATURES = np.array([
    [1.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 1.0, 0.5],
    [0.0, 0.0, 1.0, 0.0, -0.4],
    [0.0, 0.0, 1.0, 1.0, 0.2],
    [0.0, 0.0, 1.0, 0.0, 0.0],
])  # fmt: skip
K, DA = FEATURES.shape
ONES = np.column_stack([FEATURES, np.ones(K)])

#: every family with arm features, with settings that exercise its priors and forgetting
FAMILIES = {
    "shared_linear": {"kind": "shared_linear", "half_life": 300},
    "shared_linear_joint": {"kind": "shared_linear", "sampling": "joint"},
    "shared_logistic": {"kind": "shared_logistic"},
    "hybrid_linear": {"kind": "hybrid_linear", "offset_sd": 0.4},
    "hybrid_logistic": {"kind": "hybrid_logistic", "learn_offset_sd": True},
    "factored_value": {
        "kind": "factored_value", "factor_prior": "balanced", "value_prior": "balanced",
        "typical_conversion": 0.05, "half_life": 500,
    },
    "factored_value_hybrid": {
        "kind": "factored_value", "click_model": "hybrid", "factor_prior": "balanced",
        "value_prior": "balanced", "exploration_scale": 0.35,
    },
}  # fmt: skip


def registry() -> ArmRegistry:
    reg = ArmRegistry(capacity=8)
    reg.add(["p0", "p1"], "partner")
    reg.add([f"m{i}" for i in range(K - 2)], "mini_shop")
    return reg


def config(family: str, intercept: bool):
    policy = {
        **FAMILIES[family], "n_context_features": DC, "refresh_every": 16,
        "n_arm_features": DA if intercept else DA + 1, "arm_intercept": intercept,
    }  # fmt: skip
    return EngineConfig.model_validate({"policy": policy}).policy


def twins(family: str, seed: int = 4):
    """(the option on, fed the given features; off, fed them with a column of ones)."""
    on = make_policy(config(family, True), registry(), seed=seed, arm_features=FEATURES)
    off = make_policy(config(family, False), registry(), seed=seed, arm_features=ONES)
    return on, off


def play(pol, rounds: int = 5, seed: int = 9) -> list[np.ndarray]:
    """Arms and probabilities of ``rounds`` seeded batches of 60 requests, each batch's
    outcomes learned before the next."""
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(rounds):
        n = 60
        ptr, idx = random_requests(rng, n, K, min_size=2)
        xs = rng.normal(size=(n, DC))
        out = pol.decide_batch(ptr, idx, xs)
        seen += [out.arms, out.probabilities]
        click = (rng.random(n) < 0.3).astype(float)
        if pol.LEARNS_EVENTS:
            order = click * (rng.random(n) < 0.3)
            pol.learn_outcomes(out.arms, click, order, order * rng.lognormal(4, 0.5, n), None, xs)
        else:
            pol.update_batch(out.arms, click, xs)
    return seen


def assert_same_state(a, b) -> None:
    sa, sb = a.export_state()[0], b.export_state()[0]
    assert sa.keys() == sb.keys()
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.heavy
def test_the_intercept_is_a_column_of_ones(family):
    """Same state before and after learning, same arms and probabilities to the bit."""
    on, off = twins(family)
    assert on.state.features.shape[1] == DA + 1
    np.testing.assert_array_equal(on.given_arm_features(), FEATURES)
    assert_same_state(on, off)
    for a, b in zip(play(on), play(off), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_same_state(on, off)


@pytest.mark.parametrize("family", ["shared_linear", "factored_value_hybrid"])
@pytest.mark.heavy
def test_snapshots_and_new_arms_keep_it(family):
    """A restored snapshot decides as the original; an arm added later is given its
    ``n_arm_features`` values and gets the intercept too; the full width is refused."""
    on, off = twins(family)
    play(on), play(off)
    arrays, meta = on.export_state()
    reg = registry()
    twin = policy_class(on.config).restore(on.config, reg, 4, arrays, meta)
    for pol, feats in ((on, [0.0, 0.0, 1.0, 1.0, 0.9]), (off, [0.0, 0.0, 1.0, 1.0, 0.9, 1.0]),
                       (twin, [0.0, 0.0, 1.0, 1.0, 0.9])):  # fmt: skip
        pol.registry.add(["late"], "mini_shop")
        pol.sync_arms(np.array([feats]))
    with pytest.raises(InvalidInputError, match="arm_features"):
        on.check_arm_features(1, np.ones((1, DA + 1)))
    for a, b, c in zip(play(on, 3, 11), play(off, 3, 11), play(twin, 3, 11), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_validation_counts_the_intercept():
    """The joint-size bound and the joint draw's bank rows count the extra feature."""
    SharedLinearConfig(n_context_features=64, n_arm_features=64)
    with pytest.raises(ConfigError, match="4096"):
        SharedLinearConfig(n_context_features=64, n_arm_features=64, arm_intercept=True)
    SharedLinearConfig(n_context_features=2, n_arm_features=4, sampling="joint", max_candidates=4)
    with pytest.raises(ConfigError, match="max_candidates"):
        SharedLinearConfig(
            n_context_features=2, n_arm_features=4, sampling="joint", max_candidates=4,
            arm_intercept=True,
        )  # fmt: skip
    assert FactoredValueConfig(n_context_features=2, n_arm_features=3).model_arm_features == 3


def facade_config(intercept: bool, extra: float = 0.0) -> dict:
    arms = [{"id": "p0", "group": "partner", "features": [1.0, 0.0, 0.0]},
            {"id": "p1", "group": "partner", "features": [0.0, 1.0, 0.0]},
            {"id": "m0", "group": "mini_shop", "features": [0.0, 0.0, 1.0 + extra]}]  # fmt: skip
    return {
        "engine": {"policy": {"kind": "shared_linear", "n_context_features": 2,
                              "n_arm_features": 3, "arm_intercept": intercept}},
        "arms": arms,
        "serving": {"reward_wait_s": 60.0},
    }  # fmt: skip


def test_the_facade_serves_reconfigures_and_refuses_a_width_change():
    """Through ``Allocator``: arms keep their given features across a reconfiguration that
    adds an arm, and switching the intercept (the model's width) is refused with the
    running allocator untouched."""
    alloc = Allocator(facade_config(True), seed=2)
    for t in range(40):
        d = alloc.decide(["p0", "p1", "m0"], [0.5, -1.0], timestamp=1.7e9 + t)
        alloc.update(d.decision_id, {"order": 1.0 if d.arm_id == "m0" else 0.0})
    cfg = facade_config(True)
    cfg["arms"].append({"id": "m1", "group": "mini_shop", "features": [0.0, 0.0, 0.5]})
    alloc.reconfigure(cfg)
    np.testing.assert_array_equal(
        alloc.policy.given_arm_features(),
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.5]],
    )
    assert alloc.policy.state.features[:4, 3].tolist() == [1.0] * 4
    before = alloc.policy.export_state()[0]
    with pytest.raises(InvalidInputError, match="dimensions changed"):
        alloc.reconfigure(facade_config(False))
    after = alloc.policy.export_state()[0]
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert alloc.decide(["p0", "m1"], [0.1, 0.2], timestamp=1.7e9 + 100).arm_id in ("p0", "m1")


def test_a_prior_scale_can_name_the_intercept():
    """``arm_feature_prior_scale`` indexes the model's features: the intercept is the last
    index, and one past it is refused."""
    cfg = FactoredValueConfig(
        n_context_features=2, n_arm_features=3, arm_intercept=True,
        arm_feature_prior_scale={3: 0.5},
    )  # fmt: skip
    assert cfg.model_arm_features == 4
    with pytest.raises(ConfigError, match="arm feature 4"):
        FactoredValueConfig(
            n_context_features=2, n_arm_features=3, arm_intercept=True,
            arm_feature_prior_scale={4: 0.5},
        )  # fmt: skip
    with pytest.raises(ConfigError, match="arm feature 3"):
        FactoredValueConfig(n_context_features=2, n_arm_features=3, arm_feature_prior_scale={3: 2})
