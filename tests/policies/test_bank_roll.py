"""The score bank's rolling redraw costs in proportion to the updates a refresh folds in."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import LinearGaussianConfig, SharedLinearConfig, make_policy
from allocator.errors import SnapshotError
from tests.conftest import make_registry


def _policy(kind: str):
    reg = make_registry(6)
    if kind == "shared":
        cfg = SharedLinearConfig(n_context_features=2, n_arm_features=2, max_candidates=32,
                                 bank_rows=512, refresh_every=10**6)  # fmt: skip
        return make_policy(cfg, reg, seed=3, arm_features=np.ones((6, 2)))
    cfg = LinearGaussianConfig(n_features=2, max_candidates=32, bank_rows=512, refresh_every=10**6)
    return make_policy(cfg, reg, seed=3)


@pytest.mark.parametrize("kind", ["shared", "disjoint"])
@pytest.mark.parametrize(("updates", "rows"), [(1, 32), (5, 160), (40, 512), (0, 1)])
def test_a_refresh_redraws_bank_rows_in_proportion_to_its_updates(kind, updates, rows):
    """1024 normals per update (32 rows of 32 slots), at least one row, at most the bank."""
    policy = _policy(kind)
    policy.state.z_cursor[0] = 0  # building the policy rolled one row already
    before = policy.state.z.copy()
    for i in range(updates):
        policy.update(i % 6, 1.0, [1.0, 0.5])
    policy.refresh()
    changed = np.flatnonzero((policy.state.z != before).any(axis=0))
    assert changed.size == rows
    np.testing.assert_array_equal(changed, np.arange(rows))  # the window starts at row 0


@pytest.mark.parametrize("kind", ["shared", "disjoint"])
def test_a_double_precision_bank_of_an_older_snapshot_restores_as_float32(kind):
    """The bank is single precision; a state saved with a float64 bank restores with that
    bank rounded, deciding as the policy whose bank was rounded the same way."""
    policy = _policy(kind)
    for i in range(12):
        policy.update(i % 6, float(i % 2), [1.0, 0.5])
    policy.refresh()
    arrays, meta = policy.export_state()
    assert arrays["z"].dtype == np.float32
    old = dict(arrays, z=arrays["z"].astype(np.float64) * (1 + 2.0**-30))  # rounds back
    restored = type(policy).restore(policy.config, policy.registry, 3, old, meta)
    assert restored.state.z.dtype == np.float32
    np.testing.assert_array_equal(restored.state.z, arrays["z"])
    cand = np.arange(6)
    for _ in range(20):
        a, b = policy.decide(cand, [0.3, -1.0]), restored.decide(cand, [0.3, -1.0])
        assert (a.arm_index, a.propensity) == (b.arm_index, b.propensity)
    bad = dict(arrays, z=np.full(arrays["z"].shape, 1e300))  # beyond float32: refused
    with pytest.raises(SnapshotError, match="'z' holds NaN or inf"):
        type(policy).restore(policy.config, policy.registry, 3, bad, meta)
