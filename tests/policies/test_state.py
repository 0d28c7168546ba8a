"""Declared model state: every generic operation follows the field roles, and nothing
unchecked is restored or merged."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import InvalidInputError, SnapshotError
from allocator.config import (
    BetaBernoulliConfig,
    HybridLinearConfig,
    HybridLogisticConfig,
    LinearGaussianConfig,
    LogisticConfig,
    NormalGammaConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
)
from allocator.policies import make_policy
from allocator.policies.state import Field, ModelState, Role
from tests.conftest import make_registry

FIELDS = (
    Field("n_obs", np.int64, Role.PER_ARM | Role.LEARNED | Role.ADDITIVE, values="count"),
    Field("t_last", np.int64, Role.PER_ARM),
    Field("clock", np.int64, Role.LEARNED, (1,)),
    Field("s", np.float64, Role.PER_ARM | Role.LEARNED | Role.ADDITIVE | Role.DECAYS),
    Field("prior", np.float64, Role.PER_ARM | Role.PRIOR, fill=1.0),
    Field("g", np.float64, Role.LEARNED | Role.ADDITIVE, ("d", "d")),
    Field("bank", np.float32, Role.PER_ARM | Role.CACHE, ("rows",)),
    Field("buf", np.int64, Role.PER_ARM | Role.SCRATCH, fill=-1),
)
SIZES = {"d": 2, "rows": 3}


def state(capacity: int = 4) -> ModelState:
    return ModelState(FIELDS, SIZES, capacity)


def test_arrays_follow_their_declarations():
    s = state()
    assert s.s.shape == (4,) and s.g.shape == (2, 2) and s.bank.shape == (4, 3)
    assert s.bank.dtype == np.float32 and (s.prior == 1.0).all() and (s.buf == -1).all()
    assert [f.name for f in s.select(Role.ADDITIVE)] == ["n_obs", "s", "g"]


def test_growth_keeps_rows_and_fills_new_ones_in_slices():
    s = state()
    s.s[:] = [1, 2, 3, 4]
    s.buf[:] = 7
    grown = s.grown_arrays(10)
    s.fill_rows(grown, 0, 10)
    s.copy_rows(grown, 0, 2)
    s.copy_rows(grown, 2, 4)
    s.s[1] = 20.0  # learning that lands while the copy is under way ...
    s.copy_arms(grown, np.array([1]))  # ... is re-copied before the swap
    old = s.install(grown, 10)
    assert s.capacity == 10 and len(old) == len(s.select(Role.PER_ARM))
    np.testing.assert_array_equal(s.s, [1, 20, 3, 4, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(s.prior[4:], 1.0)
    np.testing.assert_array_equal(s.buf[4:], -1)
    assert s.g.shape == (2, 2)  # model-wide arrays are not per arm


def test_snapshot_round_trip_skips_scratch():
    s = state()
    s.s[:] = np.arange(4.0)
    s.g[:] = [[1.0, 2.0], [2.0, 5.0]]
    snap = s.snapshot()
    assert "buf" not in snap
    t = state()
    t.restore(snap)
    for name, value in snap.items():
        np.testing.assert_array_equal(getattr(t, name), value)
    assert (t.buf == -1).all()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.pop("s"), "'s' is missing"),
        (lambda a: a.update(s=a["s"].astype(np.float32)), "dtype float32"),
        (lambda a: a.update(s=np.zeros(5)), r"shape \(5,\)"),
        (lambda a: a.update(g=np.zeros((3, 3))), r"shape \(3, 3\)"),
        (lambda a: a.update(s=np.array([0.0, np.nan, 0.0, 0.0])), "NaN or inf"),
        (lambda a: a.update(bank=np.full((4, 3), np.inf, dtype=np.float32)), "NaN or inf"),
    ],
)
def test_restore_checks_everything_before_changing_anything(change, match):
    s = state()
    s.s[:] = 9.0
    arrays = state().snapshot()
    change(arrays)
    with pytest.raises(SnapshotError, match=match):
        s.restore(arrays)
    assert (s.s == 9.0).all()


def test_settle_applies_pending_forgetting_to_decaying_fields_only():
    s = state()
    s.clock[0] = 10
    s.t_last[:] = [10, 8, 5, 0]
    s.s[:] = 1.0
    s.n_obs[:] = 3
    s.settle(0.5, 4)
    np.testing.assert_allclose(s.s, [1.0, 0.25, 0.5**5, 0.5**10])
    np.testing.assert_array_equal(s.n_obs, 3)
    np.testing.assert_array_equal(s.t_last, 10)


@pytest.mark.parametrize(
    ("delta", "match"),
    [
        ({"n_obs": np.zeros(2, dtype=np.int64), "s": np.zeros(2)}, r"lacks \['g'\]"),
        ({"n_obs": np.zeros(9, dtype=np.int64), "s": np.zeros(9), "g": np.zeros((2, 2))},
         "covers 9 arms"),
        ({"n_obs": np.zeros(2, dtype=np.int64), "s": np.zeros(3), "g": np.zeros((2, 2))},
         r"delta\['s'\] has shape"),
        ({"n_obs": np.zeros(2, dtype=np.int64), "s": np.array([0.0, np.inf]),
          "g": np.zeros((2, 2))}, "finite"),
        ({"n_obs": np.array([1, -1]), "s": np.zeros(2), "g": np.zeros((2, 2))}, "negative"),
        ({"n_obs": np.zeros(2, dtype=np.int64), "s": np.zeros(2), "g": np.zeros((2, 2)),
          "bank": np.zeros(2)}, "unknown arrays"),
        ("not a mapping", "mapping of arrays"),
    ],
)  # fmt: skip
def test_bad_deltas_are_typed_errors(delta, match):
    with pytest.raises(InvalidInputError, match=match):
        state().check_delta(delta, 4)


def test_a_checked_delta_adds_to_additive_fields_only():
    s = state()
    d = s.check_delta({"n_obs": np.array([1, 2]), "s": np.array([0.5, 1.5]), "g": np.eye(2)}, 4)
    merged = s.merged(d, 1.0, 1e9)
    np.testing.assert_array_equal(s.n_obs, 0)  # nothing changes before put
    assert s.put(merged) == 2
    np.testing.assert_array_equal(s.n_obs, [1, 2, 0, 0])
    np.testing.assert_array_equal(s.s, [0.5, 1.5, 0, 0])
    np.testing.assert_array_equal(s.g, np.eye(2))


def test_merged_statistics_are_brought_to_the_clock_and_checked():
    s = state()
    s.s[:2] = [4.0, 8.0]
    s.clock[0], s.t_last[:2] = 3, [1, 3]
    d = s.check_delta({"n_obs": np.array([1, 0]), "s": np.array([1.0, 0.0]), "g": np.eye(2)}, 4)
    merged = s.merged(d, 0.5, 1e9)
    np.testing.assert_allclose(merged["s"], [4.0 * 0.25 + 1.0, 8.0])  # decayed by 0.5**2
    with pytest.raises(InvalidInputError, match=r"beyond 5 in magnitude"):
        s.merged(d, 0.5, 5.0)
    d["n_obs"] = np.array([-1, 0])
    with pytest.raises(InvalidInputError, match=r"delta\['n_obs'\] would make a non-negative"):
        s.merged(d, 1.0, 1e9)
    d["n_obs"] = np.array([0, 0])
    d["s"] = np.array([-4.0, 0.0])  # not a declared count: may go negative
    assert s.merged(d, 1.0, 1e9)["s"][0] == 0.0


def test_adopt_takes_learned_and_prior_fields_not_caches():
    a, b = state(), state()
    b.s[:] = 2.0
    b.prior[:] = 3.0
    b.bank[:] = 4.0
    b.clock[0] = 7
    a.adopt(b, 3)
    np.testing.assert_array_equal(a.s, [2, 2, 2, 0])
    np.testing.assert_array_equal(a.prior, [3, 3, 3, 1])
    assert (a.bank == 0).all() and a.clock[0] == 7


CONFIGS = {
    "beta": (BetaBernoulliConfig(), None),
    "normal_gamma": (NormalGammaConfig(), None),
    "linear": (LinearGaussianConfig(n_features=2), None),
    "shared": (SharedLinearConfig(n_context_features=2, n_arm_features=2), np.ones((5, 2))),
    "logistic": (LogisticConfig(n_features=2), None),
    "shared_logistic": (
        SharedLogisticConfig(n_context_features=2, n_arm_features=2),
        np.ones((5, 2)),
    ),
    "hybrid": (HybridLinearConfig(n_context_features=2, n_arm_features=2), np.ones((5, 2))),
    "hybrid_logistic": (
        HybridLogisticConfig(n_context_features=2, n_arm_features=2),
        np.ones((5, 2)),
    ),
}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_every_family_declares_additive_state_and_a_clock(kind):
    cfg, feats = CONFIGS[kind]
    pol = make_policy(cfg, make_registry(5), seed=0, arm_features=feats)
    names = {f.name for f in pol.state.fields}
    assert {"clock", "stream", "n_obs", "dirty", "pos_of_arm"} <= names
    additive = [f.name for f in pol.state.select(Role.ADDITIVE)]
    assert "n_obs" in additive and len(additive) >= 2
    assert all(f.has(Role.LEARNED) for f in pol.state.select(Role.ADDITIVE))
    # decaying per-arm statistics need the per-arm forgetting clock
    if any(f.has(Role.PER_ARM) for f in pol.state.select(Role.DECAYS)):
        assert "t_last" in names


def _feed(pol, arms, seed):
    rng = np.random.default_rng(seed)
    d = pol.n_features
    xs = None if d is None else rng.normal(size=(len(arms), d))
    pol.update_batch(np.array(arms), rng.integers(0, 2, len(arms)).astype(float), xs)


#: families whose statistic for an observation does not depend on the model's state (a
#: logistic factor is linearised at the model's current mean, so a model fed only the new
#: observations adds different factors)
CONJUGATE = ["beta", "normal_gamma", "linear", "shared", "hybrid"]


@pytest.mark.parametrize("kind", CONJUGATE)
def test_delta_under_forgetting_holds_exactly_the_new_observations(kind):
    """With forgetting, the previous export is decayed before it is subtracted: the delta is
    what a model fed only the new observations (at the same clock) holds."""
    cfg, feats = CONFIGS[kind]
    cfg = cfg.model_copy(update={"discount": 0.9})
    replica = make_policy(cfg, make_registry(5), seed=0, arm_features=feats)
    _feed(replica, [0, 1, 2, 0], seed=1)
    replica.export_delta()
    only_new = make_policy(cfg, make_registry(5), seed=0, arm_features=feats)
    only_new.state.clock[0] = replica.state.clock[0]
    if "t_last" in only_new.state.names:
        only_new.state.t_last[...] = replica.state.clock[0]
    for pol in (replica, only_new):
        _feed(pol, [1, 3, 1], seed=2)
    delta = replica.export_delta()
    only_new.settle()
    for name, value in only_new.state.additive(5).items():
        np.testing.assert_allclose(delta[name], value, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "kind", ["linear", "shared", "logistic", "shared_logistic", "hybrid", "hybrid_logistic"]
)
def test_a_delta_breaking_the_posterior_precision_is_refused_whole(kind):
    cfg, feats = CONFIGS[kind]
    pol = make_policy(cfg, make_registry(5), seed=0, arm_features=feats)
    _feed(pol, [0, 1], seed=1)
    before = {k: v.copy() for k, v in pol.state.snapshot().items()}
    delta = pol.export_delta()
    g = delta["g"][0] if delta["g"].ndim == 3 else delta["g"]
    g[...] = -10.0 * np.eye(g.shape[0])  # finite, symmetric, not a sum of x xᵀ
    with pytest.raises(InvalidInputError, match="not positive definite"):
        pol.merge(delta)
    for name, value in pol.state.snapshot().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
