"""Joint Thompson sampling of the shared model (``sampling: joint``).

Marginal sampling gives every candidate its own draw, so a crowd of candidates that share
their features wins more often the larger it is, whatever the model believes; a joint
draw scores the crowd as the model does: as one. Propensities stay exact (calibration).
"""

from __future__ import annotations

import numpy as np
import pytest

from allocator import ArmRegistry, SharedLinearConfig, SharedLogisticConfig, make_policy
from allocator.config import parse_config
from allocator.errors import ConfigError
from tests.policies.test_propensities import calibration

DC, DA = 3, 2


def crowd_policy(sampling: str) -> object:
    """Arm 0 ("partner", features e0) and 24 look-alike arms (features e1) whose posterior
    means are equal and whose sds are equal: an even contest between the two groups."""
    reg = ArmRegistry(capacity=32)
    reg.add(["partner"], "partner")
    reg.add([f"shop:{i}" for i in range(24)], "mini_shop")
    feats = np.zeros((25, DA))
    feats[0, 0] = 1.0
    feats[1:, 1] = 1.0
    cfg = SharedLinearConfig(
        n_context_features=DC, n_arm_features=DA, sampling=sampling, epsilon=0.0,
        refresh_every=10**9, bank_rows=4096,
    )  # fmt: skip
    pol = make_policy(cfg, reg, seed=3, arm_features=feats)
    x = np.tile([1.0, 0.0, 0.0], (200, 1))
    arms = np.tile([0, 1], 100)
    pol.update_batch(arms, np.full(200, 0.5), x)  # both groups: 100 rewards of 0.5
    pol.refresh()
    return pol


@pytest.mark.parametrize("crowd", [1, 4, 24])
def test_joint_draw_scores_a_crowd_as_one(crowd):
    """Equal beliefs about the two groups: jointly, the look-alikes together win half the
    bank rows however many they are; marginally, their share grows with their number."""
    ctx = np.array([[1.0, 0.0, 0.0]])
    cand = np.arange(crowd + 1, dtype=np.int64)
    ptr = np.array([0, crowd + 1], dtype=np.int64)
    joint = crowd_policy("joint").decide_batch(ptr, cand, ctx).probabilities
    marginal = crowd_policy("marginal").decide_batch(ptr, cand, ctx).probabilities
    shop_joint, shop_marginal = 1.0 - joint[0], 1.0 - marginal[0]
    assert abs(shop_joint - 0.5) < 0.03  # 4096 bank rows: sd of the share 0.008
    assert joint[2:].sum() == 0.0  # identical scores: the first look-alike takes the row
    if crowd == 1:
        assert abs(shop_marginal - 0.5) < 0.03
    else:
        assert shop_marginal > 1.0 - 1.0 / (crowd + 1) - 0.05  # ~ a fair draw among crowd+1


def test_joint_equals_marginal_for_one_candidate_per_group():
    """With one candidate on each side the two procedures sample the same contest."""
    ctx = np.array([[1.0, 0.0, 0.0]])
    ptr = np.array([0, 2], dtype=np.int64)
    cand = np.array([0, 1], dtype=np.int64)
    p_joint = crowd_policy("joint").decide_batch(ptr, cand, ctx).probabilities
    p_marg = crowd_policy("marginal").decide_batch(ptr, cand, ctx).probabilities
    assert abs(p_joint[0] - p_marg[0]) < 0.04


@pytest.mark.slow
@pytest.mark.parametrize("config", [SharedLinearConfig, SharedLogisticConfig])
def test_joint_calibration(rng, config):
    """10^5 decisions over random subsets and contexts: each arm's count against the sum of
    its propensities (5σ), as for every family."""
    k = 30
    cfg = config(
        n_context_features=4, n_arm_features=3, refresh_every=10**9, bank_rows=64,
        sampling="joint",
    )  # fmt: skip
    reg = ArmRegistry(capacity=32)
    reg.add([f"arm:{i}" for i in range(k)], "g")
    pol = make_policy(cfg, reg, seed=4, arm_features=rng.normal(size=(k, 3)))
    pol.update_batch(rng.integers(0, k, 200), rng.integers(0, 2, 200).astype(float),
                     rng.normal(size=(200, 4)))  # fmt: skip
    pol.refresh()
    calibration(pol, rng, k, lambda n, dd: rng.normal(size=(n, dd)), 4)


def test_joint_needs_bank_rows_for_the_draw():
    data = {"n_context_features": 2, "n_arm_features": 8, "max_candidates": 4,
            "sampling": "joint"}  # fmt: skip
    with pytest.raises(ConfigError, match="max_candidates >= n_arm_features"):
        parse_config(SharedLinearConfig, data)
    with pytest.raises(ConfigError, match="sampling"):
        parse_config(SharedLinearConfig, {**data, "sampling": "pairwise"})
