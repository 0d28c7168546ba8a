"""Bad input: a typed error naming the field and value, and the model state unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from allocator import (
    AllocatorError,
    BetaBernoulliConfig,
    InvalidInputError,
    LinearGaussianConfig,
    NormalGammaConfig,
    SharedLinearConfig,
    UnknownArmError,
    make_policy,
)
from tests.conftest import make_registry


def fingerprint(pol) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(pol.state.snapshot().items()):
        digest.update(name.encode() + value.tobytes())
    digest.update(repr(pol.rng.bit_generator.state).encode())
    digest.update(pol.registry.active.tobytes())
    return digest.hexdigest()


def build(kind):
    reg = make_registry(5)
    reg.retire(["arm:4"])
    if kind == "beta":
        pol = make_policy(BetaBernoulliConfig(), reg, seed=1)
        pol.update_batch([0, 1, 2], [1.0, 0.0, 1.0])
    elif kind == "normal_gamma":
        pol = make_policy(NormalGammaConfig(), reg, seed=1)
        pol.update_batch([0, 1, 2], [10.0, 3.0, -1.0])
    elif kind == "linear":
        pol = make_policy(LinearGaussianConfig(n_features=3), reg, seed=1)
        pol.update_batch([0, 1], [1.0, 0.0], np.ones((2, 3)))
    else:
        pol = make_policy(
            SharedLinearConfig(n_context_features=3, n_arm_features=2),
            reg,
            seed=1,
            arm_features=np.ones((5, 2)),
        )
        pol.update_batch([0, 1], [1.0, 0.0], np.ones((2, 3)))
    return pol


CTX = {"beta": None, "normal_gamma": None, "linear": np.ones(3), "shared": np.ones(3)}

DECIDE_CASES = [
    ([], InvalidInputError, "candidates is empty"),
    ([0, 9], UnknownArmError, r"candidates\[1\] = 9 is not a registered arm"),
    ([-1, 0], UnknownArmError, r"candidates\[0\] = -1 is not a registered arm"),
    ([0, 4], UnknownArmError, r"candidates\[1\] = 4 is a retired arm"),
    ([1, 2, 1], InvalidInputError, r"candidates\[2\] = 1 appears twice"),
    ([[0, 1]], InvalidInputError, "candidates must be 1-d"),
    ([0.5, 1.0], InvalidInputError, "integer arm indices"),
]

UPDATE_CASES = [
    (9, 1.0, UnknownArmError, "arm 9 is not a registered"),
    (-2, 1.0, UnknownArmError, "arm -2 is not a registered"),
    ("a", 1.0, InvalidInputError, "arm must be an integer"),
    (0, float("nan"), InvalidInputError, "reward = nan"),
    (0, float("inf"), InvalidInputError, "reward = inf"),
    (0, None, InvalidInputError, "reward must be a number"),
]


@pytest.mark.parametrize("kind", ["beta", "normal_gamma", "linear", "shared"])
@pytest.mark.parametrize(("cand", "exc", "match"), DECIDE_CASES)
def test_bad_candidates_rejected_state_unchanged(kind, cand, exc, match):
    pol = build(kind)
    before = fingerprint(pol)
    with pytest.raises(exc, match=match):
        pol.decide(cand, CTX[kind])
    assert fingerprint(pol) == before
    assert (pol.state.pos_of_arm == -1).all()
    assert pol.decide([0, 1, 2], CTX[kind]).arm_index in (0, 1, 2)


@pytest.mark.parametrize("kind", ["beta", "normal_gamma", "linear", "shared"])
@pytest.mark.parametrize(("arm", "reward", "exc", "match"), UPDATE_CASES)
def test_bad_updates_rejected_state_unchanged(kind, arm, reward, exc, match):
    pol = build(kind)
    before = fingerprint(pol)
    with pytest.raises(exc, match=match):
        pol.update(arm, reward, CTX[kind])
    assert fingerprint(pol) == before


@pytest.mark.parametrize(
    ("kind", "context", "match"),
    [
        ("linear", np.array([1.0, np.nan, 0.0]), r"context\[1\] = nan"),
        ("linear", np.array([1.0, np.inf, 0.0]), r"context\[1\] = inf"),
        ("linear", np.ones(4), r"context has shape \(4,\), expected \(3,\)"),
        ("linear", None, "context is required"),
        ("linear", "abc", "context must be real numbers, got dtype <U3"),
        ("linear", [1.0, 10**400, 0.0], "context holds an integer beyond float64 range"),
        ("shared", np.ones((3, 1)), r"context has shape \(3, 1\)"),
        ("beta", np.ones(3), "takes no context"),
    ],
)
def test_bad_contexts_rejected_state_unchanged(kind, context, match):
    pol = build(kind)
    before = fingerprint(pol)
    with pytest.raises(InvalidInputError, match=match):
        pol.decide([0, 1], context)
    with pytest.raises(InvalidInputError, match=match):
        pol.update(0, 1.0, context)
    assert fingerprint(pol) == before


def test_beta_reward_outside_unit_interval():
    pol = build("beta")
    before = fingerprint(pol)
    with pytest.raises(InvalidInputError, match=r"reward\[0\] = 1.5: Beta–Bernoulli expects"):
        pol.update(0, 1.5)
    with pytest.raises(InvalidInputError, match=r"reward\[2\] = -0.1"):
        pol.update_batch([0, 1, 2], [1.0, 0.0, -0.1])
    assert fingerprint(pol) == before


@pytest.mark.parametrize("kind", ["beta", "linear"])
def test_bad_batches_rejected_state_unchanged(kind):
    pol = build(kind)
    before = fingerprint(pol)
    ctx = None if kind == "beta" else np.ones((2, 3))
    cases = [
        (([0, 2, 5], [0, 1, 1, 2]), InvalidInputError, "cand_ptr must start at 0"),
        (([1, 2, 4], [0, 1, 1, 2]), InvalidInputError, "cand_ptr must start at 0"),
        (([0, 3, 2, 4], [0, 1, 1, 2]), InvalidInputError, "non-decreasing"),
        (([0, 2, 4], [0, 1, 2, 2]), InvalidInputError, r"request 1: candidates\[1\] = 2 appears"),
        (
            ([0, 2, 4], [0, 1, 2, 4]),
            UnknownArmError,
            r"request 1: candidates\[1\] = 4 is a retired",
        ),
    ]
    for (ptr, idx), exc, match in cases:
        with pytest.raises(exc, match=match):
            pol.decide_batch(ptr, idx, ctx)
    with pytest.raises(UnknownArmError, match=r"arms\[1\] = 7"):
        pol.update_batch([0, 7], [1.0, 1.0], ctx)
    with pytest.raises(InvalidInputError, match=r"rewards has shape \(1,\), expected \(2,\)"):
        pol.update_batch([0, 1], [1.0], ctx)
    assert fingerprint(pol) == before


def test_too_many_candidates_for_the_normal_bank():
    reg = make_registry(40)
    pol = make_policy(LinearGaussianConfig(n_features=2, max_candidates=8), reg, seed=0)
    with pytest.raises(
        InvalidInputError, match=r"9 candidates: too many candidates.*at most max_candidates = 8"
    ):
        pol.decide(np.arange(9), np.ones(2))


def test_every_error_is_an_allocator_error():
    for exc in (InvalidInputError, UnknownArmError):
        assert issubclass(exc, AllocatorError)


def test_bad_seed_and_arm_features():
    reg = make_registry(3)
    with pytest.raises(InvalidInputError, match="seed must be a non-negative integer"):
        make_policy(BetaBernoulliConfig(), reg, seed=-1)
    cfg = SharedLinearConfig(n_context_features=2, n_arm_features=2)
    with pytest.raises(InvalidInputError, match=r"arm_features required for 3 new arms"):
        make_policy(cfg, reg, seed=0)
    with pytest.raises(InvalidInputError, match=r"arm_features has shape \(3, 3\)"):
        make_policy(cfg, reg, seed=0, arm_features=np.ones((3, 3)))
    with pytest.raises(InvalidInputError, match="takes no arm features"):
        make_policy(BetaBernoulliConfig(), reg, seed=0, arm_features=np.ones((3, 2)))


@pytest.mark.parametrize("kind", ["normal_gamma", "linear", "shared"])
def test_absurd_but_finite_inputs_are_refused_before_they_reach_the_posterior(kind):
    pol = build(kind)
    before = fingerprint(pol)
    ctx = CTX[kind]
    with pytest.raises(InvalidInputError, match="max_abs_reward"):
        pol.update(0, 1e300, ctx)
    with pytest.raises(InvalidInputError, match=r"\|value\| <= 1e\+09"):
        pol.update_batch([0, 1], [1.0, 1e300], None if ctx is None else [ctx, ctx])
    if ctx is not None:
        big = np.full(len(ctx), 1e150)
        with pytest.raises(InvalidInputError, match=r"context\[0\] = 1e\+150"):
            pol.decide([0, 1], big)
        with pytest.raises(InvalidInputError, match=r"context\[0\] = 1e\+150"):
            pol.update(0, 1.0, big)
    assert fingerprint(pol) == before
    for arr in pol.state.snapshot().values():
        assert arr.dtype.kind != "f" or np.isfinite(arr).all()
