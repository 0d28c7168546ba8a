"""A policy's single-call path (cached kernel arguments, the fused Beta learning step)
decides and learns exactly what its batch path does, also across a catalogue growth."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import (
    AllocatorError,
    BetaBernoulliConfig,
    NormalGammaConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
    make_policy,
)
from tests.conftest import make_registry


@pytest.mark.parametrize(
    "cfg",
    [
        BetaBernoulliConfig(half_life=50.0, refresh_every=8, epsilon=0.1),
        BetaBernoulliConfig(rule="ucb", refresh_every=5),
        NormalGammaConfig(discount=0.99, refresh_every=8),
    ],
)
def test_single_calls_equal_batches_of_one(cfg):
    rng = np.random.default_rng(4)
    single, batch = (make_policy(cfg, make_registry(12), seed=2) for _ in range(2))
    for i in range(300):
        if i == 150:  # past the capacity: state, registry and scratch arrays reallocated
            for pol in (single, batch):
                pol.registry.add([f"late{k}" for k in range(40)], "g")
                pol.sync_arms()
        cand = rng.choice(single.registry.n_arms, size=2 + i % 9, replace=False)
        d = single.decide(cand)
        b = batch.decide_batch(np.array([0, cand.size]), cand)
        assert (d.arm_index, d.propensity, d.model_version) == (
            int(b.arms[0]), float(b.propensities[0]), b.model_version,
        )  # fmt: skip
        reward = float(rng.random() < 0.4) if cfg.kind == "beta_bernoulli" else rng.normal()
        single.update(d.arm_index, reward)
        batch.update_batch([d.arm_index], [reward])
    assert single.registry.capacity > 16 and single.version > 30
    s, _ = single.export_state()
    b, _ = batch.export_state()
    for name in s:
        np.testing.assert_array_equal(s[name], b[name], err_msg=name)


LEAN_CONFIGS = [
    BetaBernoulliConfig(refresh_every=4, epsilon=0.2),
    BetaBernoulliConfig(rule="greedy", refresh_every=3),
    NormalGammaConfig(rule="ucb", refresh_every=5),
]


def _outcome(pol, cand):
    try:
        d = pol.decide(cand)
    except AllocatorError as err:
        return type(err).__name__, str(err)
    return d.position, d.arm_index, d.propensity, pol.probabilities.tolist()


@pytest.mark.parametrize("cfg", LEAN_CONFIGS)
def test_lean_single_entry_equals_the_full_pipeline(cfg):
    """The lean per-arm entry (``DECIDE_ONE``: 15 arguments) against the same policy forced
    onto the full pipeline kernel: the same positions, propensities and probability vectors,
    the same error type and message for empty, out-of-range, retired and duplicate
    candidates, and byte-identical state after every call, rejected ones included."""
    lean, full = (make_policy(cfg, make_registry(12), seed=5) for _ in range(2))
    full.DECIDE_ONE = None  # this instance takes the general path
    assert type(lean).DECIDE_ONE is not None
    for pol in (lean, full):
        pol.registry.retire(["arm:7"], by=pol)
    rng = np.random.default_rng(8)
    bad = [[], [0, 99], [-1, 2], [3, 7], [4, 5, 4], [2, 12]]
    errors = 0
    for i in range(400):
        cand = bad[i % 6] if i % 5 == 0 else rng.choice(12, size=1 + i % 6, replace=False)
        cand = [a for a in cand if a != 7] if i % 5 else cand
        a, b = _outcome(lean, cand), _outcome(full, cand)
        assert a == b
        errors += isinstance(a[0], str)
        if not isinstance(a[0], str):
            reward = float(rng.random() < 0.5) if cfg.kind == "beta_bernoulli" else rng.normal()
            lean.update(a[1], reward)
            full.update(a[1], reward)
        sl, _ = lean.export_state()
        sf, _ = full.export_state()
        for name in sl:
            assert sl[name].tobytes() == sf[name].tobytes(), name
    assert errors >= 80 and lean.version > 20


def _learned(pol, arm, reward, context=None):
    try:
        pol.update(arm, reward, context)
    except AllocatorError as err:
        return type(err).__name__, str(err)
    return None


def test_fast_update_equals_the_checked_path():
    """``Policy.update``'s fast path (an int arm and a float reward that plainly pass, into
    the bound fused learning entry) against a policy that always takes the checks and the
    batch kernel: byte-identical state after every call, and the same error type and message
    for every refused one (bool, float or str arm, out of range, NaN, inf, a reward outside
    [0, 1], a context), which changes nothing."""
    cfg = BetaBernoulliConfig(refresh_every=4, half_life=30.0)
    fast, checked = (make_policy(cfg, make_registry(6), seed=3) for _ in range(2))
    checked.LEARN_ONE = None  # this instance learns through the checks and the batch path
    bad = [
        (True, 1.0), (6, 1.0), (-1, 0.0), (2, float("nan")), (2, float("inf")), (2, 1.5),
        (2, -0.25), ("1", 1.0), (1.0, 1.0), (2, "x"), (2, 1e300),
    ]  # fmt: skip
    rng = np.random.default_rng(6)
    refused = 0
    for i in range(400):
        context = None
        if i % 7 == 0:
            arm, reward = bad[(i // 7) % len(bad)]
        elif i % 50 == 1:
            arm, reward, context = 1, 1.0, [0.5]
        else:
            arm, reward = int(rng.integers(6)), float(rng.choice([0.0, 1.0, 0.3]))
        a, b = _learned(fast, arm, reward, context), _learned(checked, arm, reward, context)
        assert a == b
        refused += a is not None
        sf, _ = fast.export_state()
        sc, _ = checked.export_state()
        for name in sf:
            assert sf[name].tobytes() == sc[name].tobytes(), name
    assert refused >= 60 and fast.version > 50
    assert fast._learn.key is not None and checked._learn.key is None


SHARED_CONFIGS = [
    SharedLinearConfig(n_context_features=3, n_arm_features=2, max_candidates=8,
                       refresh_every=5, epsilon=0.1, max_abs_input=50.0),
    SharedLinearConfig(n_context_features=3, n_arm_features=2, max_candidates=8,
                       sampling="joint", refresh_every=3),
    SharedLinearConfig(n_context_features=3, n_arm_features=2, rule="ucb", refresh_every=4),
    SharedLogisticConfig(n_context_features=3, n_arm_features=2, max_candidates=8,
                         refresh_every=4, epsilon=0.05),
]  # fmt: skip


@pytest.mark.parametrize("cfg", SHARED_CONFIGS)
def test_lean_shared_entry_equals_the_full_pipeline(cfg):
    """The shared linear lean entry (``decide_shared_one``: 24 arguments) against the same
    policy on the full pipeline kernel: the same positions, propensities and probability
    vectors, the same error for bad candidates (empty, out of range, retired, duplicate, too
    many) and bad contexts (NaN, beyond ``max_abs_input``, wrong length), and byte-identical
    state after every call, learning included."""
    feats = np.random.default_rng(1).normal(size=(12, 2))
    lean, full = (make_policy(cfg, make_registry(12), 5, feats) for _ in range(2))
    full.DECIDE_ONE = None
    assert type(lean).DECIDE_ONE is not None
    for pol in (lean, full):
        pol.registry.retire(["arm:7"], by=pol)
    rng = np.random.default_rng(9)
    bad_cands = [[], [0, 99], [3, 7], [4, 5, 4], list(range(9))]
    bad_x = [[np.nan, 0.0, 1.0], [0.0, 1e3, 0.0], [1.0, 2.0]]
    errors = 0
    for i in range(300):
        cand = rng.choice([a for a in range(12) if a != 7], size=1 + i % 7, replace=False)
        x = rng.normal(size=3)
        if i % 6 == 0:
            cand = bad_cands[(i // 6) % len(bad_cands)]
        elif i % 6 == 3 and i % 4 == 1:
            x = bad_x[(i // 4) % len(bad_x)]
        a, b = (_outcome_with(pol, cand, x) for pol in (lean, full))
        assert a == b
        errors += isinstance(a[0], str)
        if not isinstance(a[0], str):
            reward = float(rng.random() < 0.5)
            lean.update(a[1], reward, x)
            full.update(a[1], reward, x)
        sl, _ = lean.export_state()
        sf, _ = full.export_state()
        for name in sl:
            assert sl[name].tobytes() == sf[name].tobytes(), name
    assert errors >= 50 and lean.version > 20 and lean._lean.key is not None


def _outcome_with(pol, cand, x):
    try:
        d = pol.decide(cand, x)
    except AllocatorError as err:
        return type(err).__name__, str(err)
    return d.position, d.arm_index, d.propensity, pol.probabilities.tolist()
