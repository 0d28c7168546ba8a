"""The factored value family's ``crosses``: which context columns each arm feature's weights
cross with; a left-out pair's weight is held at 0 by its prior (precision times ``PIN``).
Against the dense online Laplace and hybrid references, its validation, snapshots, and
byte-identical decisions when it is empty or names every column (what it earns on the
scenario: experiments/static_world)."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.config import FactoredValueConfig
from allocator.errors import ConfigError
from allocator.policies.factored import PIN
from tests.policies.test_factor_prior import (
    BEFORE,
    CONVERSION,
    assert_factors_are_dense,
    assert_hybrid_click_is_dense,
    decision_digest,
    events,
)
from tests.policies.test_factored_prior import DA, DC, FEATURES, naive_prior, policy
from tests.policies.test_feature_prior_scale import assert_a_snapshot_keeps

#: feature 3 (a category-like one-hot) with context columns 0 and 2 only; feature 4 (a
#: rating-like number) with the constant column 0 only; feature 5 with no column at all
CROSSES = {3: [0, 2], 4: [0], 5: []}


def pins(crosses: dict[int, list[int]]) -> np.ndarray:
    """Per weight ``i·DC + q``: PIN where ``crosses`` leaves the pair (i, q) out, else 1."""
    out = np.ones((DA, DC))
    for i, columns in crosses.items():
        out[i] = [1.0 if q in columns else PIN for q in range(DC)]
    return out.ravel()


@pytest.mark.parametrize("factor_prior", ["flat", "balanced"])
def test_left_out_pairs_are_pinned_in_the_dense_online_laplace(rng, factor_prior):
    """Every factor's prior diagonal is the configured rule's times PIN on the left-out
    pairs; the click and order posteriors equal the dense online Laplace reference with
    that prior, the value's precision its dense sum; and the left-out weights stay within
    a millionth of the kept ones' scale although the truth has them."""
    pol = policy(
        factor_prior=factor_prior, value_prior="balanced", value_prior_precision=4.0,
        typical_conversion=CONVERSION, prior_precision=2.0, crosses=CROSSES,
    )  # fmt: skip
    logit = naive_prior(FEATURES, 2.0) if factor_prior == "balanced" else np.full(DA * DC, 2.0)
    logit = logit * pins(CROSSES)
    np.testing.assert_array_equal(pol.prior_diag(), logit)
    np.testing.assert_array_equal(pol.prior_diag("order_"), logit)
    np.testing.assert_array_equal(
        pol.prior_diag("value_"), naive_prior(FEATURES, 4.0) * pins(CROSSES)
    )
    arms, xs, phi, click, order, gmv = events(rng, 400, *rng.normal(scale=0.8, size=(2, DA * DC)))
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    out = pins(CROSSES) > 1.0
    for mean in assert_factors_are_dense(pol, phi, click, order, gmv, logit):
        assert np.abs(mean[out]).max() < 1e-5 * np.abs(mean[~out]).max()


def test_the_hybrid_click_with_crosses_is_the_dense_reference(rng):
    """Hybrid click, a refresh after every impression: the shared click weights' mean and
    marginal precision and every offset's posterior equal the dense joint Laplace reference
    whose shared block has the balanced prior pinned on the left-out pairs."""
    assert_hybrid_click_is_dense(
        rng, naive_prior(FEATURES, 1.0) * pins(CROSSES), factor_prior="balanced",
        crosses=CROSSES,
    )  # fmt: skip


def test_a_snapshot_keeps_the_crosses(rng):
    assert_a_snapshot_keeps(rng, "crosses", CROSSES)


def test_the_crosses_are_validated():
    for bad, match in (
        ({DA: [0]}, "arm feature 6"),
        ({0: [DC]}, r"crosses\[0\] = \[3\]"),
        ({1: [0, 0]}, "distinct"),
        ({-1: [0]}, "crosses"),
        ({0: [-1]}, "crosses"),
        ({0: 1}, "crosses"),
    ):
        with pytest.raises(ConfigError, match=match):
            FactoredValueConfig(n_context_features=DC, n_arm_features=DA, crosses=bad)


@pytest.mark.parametrize(
    ("click_model", "half_life", "value_prior", "contracts"), list(BEFORE)[::3]
)
@pytest.mark.heavy
def test_empty_or_full_crosses_decide_byte_identically(
    click_model, half_life, value_prior, contracts
):
    """Empty (the default) or every column for every feature: arms and propensities to the
    bit as recorded before the option existed."""
    kw = {"half_life": half_life} if half_life else {}
    settings = dict(
        click_model=click_model, value_prior=value_prior, value_prior_precision=4.0,
        refresh_every=100, **kw,
    )  # fmt: skip
    want = BEFORE[(click_model, half_life, value_prior, contracts)]
    assert decision_digest(policy(**settings), contracts) == want
    every = {i: list(range(DC)) for i in range(DA)}
    assert decision_digest(policy(crosses=every, **settings), contracts) == want
