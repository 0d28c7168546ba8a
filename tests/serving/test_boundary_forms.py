"""Inputs the boundary used to coerce or let through (a fuzzing audit's findings): each is
now refused with a typed error, the allocator unchanged and decisions after it the same as
an allocator's that never saw the call."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from allocator import Allocator, InvalidInputError, UnknownArmError
from allocator.serving.config import Outcome
from tests.serving.helpers import T0, config, without_epoch

CANDS = ["taobao", "douyin", "merchant:0", "merchant:3"]


def twins(kind: str = "beta_bernoulli") -> tuple[Allocator, Allocator]:
    return Allocator(config(kind, reward_wait_s=1e6), seed=4), Allocator(
        config(kind, reward_wait_s=1e6), seed=4
    )


def assert_same_from_here(a: Allocator, b: Allocator, kind: str, t: float) -> None:
    ctx = [0.5, 0.1, 1.0] if kind != "beta_bernoulli" else None
    for i in range(20):
        da = a.decide(CANDS, context=ctx, timestamp=t + i)
        db = b.decide(CANDS, context=ctx, timestamp=t + i)
        assert (without_epoch(da.decision_id), da.arm_id, da.propensity) == (
            without_epoch(db.decision_id), db.arm_id, db.propensity,
        )  # fmt: skip


def test_decide_many_refuses_a_context_for_a_context_free_model_as_decide_does():
    a, b = twins()
    for ctx in ([0.1, 0.2, 0.3], {"age": 1.0}, []):
        with pytest.raises(InvalidInputError, match=r"requests\[1\]: .* takes no context"):
            a.decide_many([{"candidates": CANDS, "timestamp": T0},
                           {"candidates": CANDS, "context": ctx, "timestamp": T0}])  # fmt: skip
    a.decide_many([{"candidates": CANDS, "context": None, "timestamp": T0}])
    b.decide_many([{"candidates": CANDS, "timestamp": T0}])
    assert_same_from_here(a, b, "beta_bernoulli", T0 + 1)


def test_a_batch_cannot_go_back_further_than_the_skew_its_own_requests_allow():
    """Within a batch each time is held to the latest before it, the batch's own earlier
    requests included: one day back is refused as in two decide() calls."""
    a, b = twins()
    skew = a.config.serving.max_clock_skew_s
    a.decide(CANDS, timestamp=T0)
    b.decide(CANDS, timestamp=T0)
    with pytest.raises(InvalidInputError, match=r"requests\[2\]: .* before the latest decision"):
        a.decide_many([{"candidates": CANDS, "timestamp": T0 + 1.0},
                       {"candidates": CANDS, "timestamp": T0 + 10 * skew + 86400.0},
                       {"candidates": CANDS, "timestamp": T0 + 2.0}])  # fmt: skip
    c = twins()[0]  # the same requests one by one
    c.decide(CANDS, timestamp=T0)
    c.decide(CANDS, timestamp=T0 + 1.0)
    c.decide(CANDS, timestamp=T0 + 10 * skew + 86400.0)
    with pytest.raises(InvalidInputError, match="before the latest decision"):
        c.decide(CANDS, timestamp=T0 + 2.0)
    # within the skew, out of order is fine in both forms
    within = [T0 + 0.5 * skew, T0 + 0.25 * skew]
    a.decide_many([{"candidates": CANDS, "timestamp": t} for t in within])
    for t in within:
        b.decide(CANDS, timestamp=t)
    assert_same_from_here(a, b, "beta_bernoulli", T0 + skew)


@pytest.mark.parametrize(
    "value", [True, np.bool_(True), "1", Decimal("1"), [1.0], None, float("nan"), -1.0, 10**400]
)
def test_an_outcome_amount_must_be_a_real_number(value):
    a, b = twins()
    ids = [alloc.decide(CANDS, timestamp=T0).decision_id for alloc in (a, b)]
    with pytest.raises(InvalidInputError, match=r"outcome\.order = "):
        a.update(ids[0], {"order": value})
    with pytest.raises(InvalidInputError, match=r"outcome\.order = "):  # unvalidated instance
        a.update(ids[0], Outcome.model_construct(order=value))
    for alloc, decision_id in zip((a, b), ids, strict=True):  # it still waits for feedback
        alloc.update(decision_id, {"order": np.float32(1.0)})
        alloc.update(alloc.decide(CANDS, timestamp=T0 + 1).decision_id, {"order": np.int64(0)})
        alloc.expire(T0 + 2e6)
    assert a.policy.state.s1.sum() == 1.0
    np.testing.assert_array_equal(a.policy.state.s1, b.policy.state.s1)
    assert_same_from_here(a, b, "beta_bernoulli", T0 + 2e6 + 1)


@pytest.mark.parametrize("kind", ["linear_gaussian", "shared_linear"])
@pytest.mark.parametrize(
    ("context", "match"),
    [
        (["1", "2", "3"], "context must be real numbers, got dtype <U1"),
        ([True, False, True], "context must be real numbers, got dtype bool"),
        (np.array([1, 0, 1], dtype=bool), "context must be real numbers, got dtype bool"),
        ([Decimal(1), Decimal(2), Decimal(3)], "context must be real numbers, got dtype object"),
    ],
)
def test_contexts_that_are_not_numbers_are_refused_not_parsed(kind, context, match):
    a, b = twins(kind)
    with pytest.raises(InvalidInputError, match=match):
        a.decide(CANDS, context=context, timestamp=T0)
    with pytest.raises(InvalidInputError, match=match):
        a.decide_many([{"candidates": CANDS, "context": context, "timestamp": T0}])
    assert_same_from_here(a, b, kind, T0)


def test_arm_features_that_are_not_numbers_are_refused():
    a, b = twins("shared_linear")
    for features in ([["1", "2"]], [[True, False]]):
        with pytest.raises(InvalidInputError, match="features must be real numbers"):
            a.add_arms(["merchant:new"], "mini_shop", features=features)
    assert "merchant:new" not in a.registry.all_ids()
    assert_same_from_here(a, b, "shared_linear", T0)


def test_retiring_an_id_twice_in_one_call_is_refused():
    a, b = twins()
    with pytest.raises(InvalidInputError, match=r"ids\[2\] = 'merchant:0' is repeated"):
        a.retire_arms(["merchant:0", "merchant:3", "merchant:0"])
    assert a.registry.active[: a.registry.n_arms].all()
    assert_same_from_here(a, b, "beta_bernoulli", T0)


def test_an_unknown_id_is_named_briefly():
    a = twins()[0]
    with pytest.raises(UnknownArmError) as err:
        a.decide(["taobao", "x" * 1_000_000], timestamp=T0)
    assert len(str(err.value)) < 200 and "position 1" in str(err.value)


def test_a_float32_timestamp_is_refused_not_rounded():
    """A float32 holds today's epoch seconds to 128 s: T0 + 30 became T0."""
    a, b = twins()
    for call in (
        lambda: a.decide(CANDS, timestamp=np.float32(T0 + 30)),
        lambda: a.decide_many([{"candidates": CANDS, "timestamp": np.float32(T0 + 30)}]),
    ):
        with pytest.raises(InvalidInputError, match="float32: too coarse for epoch seconds"):
            call()
    d = a.decide(CANDS, timestamp=np.float64(T0))
    with pytest.raises(InvalidInputError, match="float32: too coarse"):
        a.update(d.decision_id, {"order": 1.0}, np.float32(T0 + 30))
    b.decide(CANDS, timestamp=T0)
    assert_same_from_here(a, b, "beta_bernoulli", T0 + 1)


def test_adding_an_id_twice_names_it():
    a = twins()[0]
    with pytest.raises(InvalidInputError, match=r"ids\[2\] = 'merchant:x' repeats an earlier id"):
        a.add_arms(["merchant:x", "merchant:y", "merchant:x"], "mini_shop")
    assert "merchant:x" not in a.registry.all_ids()
