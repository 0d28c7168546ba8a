"""The factored value family's ``arm_feature_prior_scale``: a per-arm-feature multiplier of
the weights' prior precision in the click, order and value factors (after the flat or
balanced rule), against the dense online Laplace and hybrid references, its validation,
snapshots, and byte-identical decisions when it is empty or all ones."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.config import FactoredValueConfig
from allocator.errors import ConfigError
from allocator.policies import policy_class
from tests.policies.test_factor_prior import (
    BEFORE,
    CONVERSION,
    assert_factors_are_dense,
    assert_hybrid_click_is_dense,
    decision_digest,
    events,
    recorded_case,
)
from tests.policies.test_factored_prior import DA, DC, FEATURES, naive_prior, policy, registry

#: the first three arm features (the test catalogue's group-like one-hots) four times freer
SCALE = {0: 0.25, 1: 0.25, 2: 0.25}


def scaled(diag: np.ndarray, scale: dict[int, float]) -> np.ndarray:
    """``diag`` with arm feature ``i``'s ``DC`` weights multiplied by ``scale[i]``."""
    out = diag.copy()
    for i, factor in scale.items():
        out[i * DC : (i + 1) * DC] *= factor
    return out


@pytest.mark.parametrize("factor_prior", ["flat", "balanced"])
def test_the_scaled_priors_are_the_dense_online_laplace(rng, factor_prior):
    """Every factor's prior diagonal is the configured rule's times the scale of its arm
    feature; the click and order posteriors equal the dense online Laplace reference with
    that prior (the order offset by ``logit(0.05)``), the value's precision its dense sum."""
    pol = policy(
        factor_prior=factor_prior, value_prior="balanced", value_prior_precision=4.0,
        typical_conversion=CONVERSION, prior_precision=2.0, arm_feature_prior_scale=SCALE,
    )  # fmt: skip
    logit = naive_prior(FEATURES, 2.0) if factor_prior == "balanced" else np.full(DA * DC, 2.0)
    logit = scaled(logit, SCALE)
    np.testing.assert_array_equal(pol.prior_diag(), logit)
    np.testing.assert_array_equal(pol.prior_diag("order_"), logit)
    np.testing.assert_array_equal(
        pol.prior_diag("value_"), scaled(naive_prior(FEATURES, 4.0), SCALE)
    )
    arms, xs, phi, click, order, gmv = events(rng, 400, *rng.normal(scale=0.4, size=(2, DA * DC)))
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    assert_factors_are_dense(pol, phi, click, order, gmv, logit)


def test_the_hybrid_click_under_a_scaled_prior_is_the_dense_reference(rng):
    """Hybrid click, a refresh after every impression: the shared click weights' mean and
    marginal precision and every offset's posterior equal the dense joint Laplace reference
    whose shared block has the scaled balanced prior."""
    assert_hybrid_click_is_dense(
        rng, scaled(naive_prior(FEATURES, 1.0), SCALE), factor_prior="balanced",
        arm_feature_prior_scale=SCALE,
    )  # fmt: skip


def test_a_weaker_prior_lets_the_scaled_weights_move_further(rng):
    """The same data: the scaled features' posterior means move further from 0 (their
    weights are less shrunk) and their posterior variances are larger."""
    kw = dict(factor_prior="balanced", click_model="hybrid", offset_sd=0.35)
    arms, xs, _, click, order, gmv = events(rng, 300, *rng.normal(scale=0.8, size=(2, DA * DC)))
    base, weak = policy(**kw), policy(arm_feature_prior_scale={0: 0.05, 1: 0.05}, **kw)
    for pol in (base, weak):
        pol.learn_outcomes(arms, click, order, gmv, None, xs)
    (mb, ab), (mw, aw) = base.factor_posterior(""), weak.factor_posterior("")
    part = slice(0, 2 * DC)
    assert np.abs(mw[part]).sum() > np.abs(mb[part]).sum()
    assert (np.diag(np.linalg.inv(aw))[part] > np.diag(np.linalg.inv(ab))[part]).all()


def assert_a_snapshot_keeps(rng, name: str, value: object) -> None:
    """A hybrid policy with the prior option ``name`` = ``value``, restored from its
    snapshot after learning, has the same three prior diagonals; a config JSON round trip
    keeps the option."""
    pol = policy(factor_prior="balanced", click_model="hybrid", **{name: value})
    arms, xs, _, click, order, gmv = events(rng, 200, *rng.normal(scale=0.4, size=(2, DA * DC)))
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    arrays, meta = pol.export_state()
    twin = policy_class(pol.config).restore(pol.config, registry(), 3, arrays, meta)
    for prefix in ("", "order_", "value_"):
        np.testing.assert_array_equal(twin.prior_diag(prefix), pol.prior_diag(prefix))
    dumped = FactoredValueConfig.model_validate_json(pol.config.model_dump_json())
    assert getattr(dumped, name) == value


def test_a_snapshot_keeps_the_scale(rng):
    assert_a_snapshot_keeps(rng, "arm_feature_prior_scale", SCALE)


def test_the_scale_is_validated():
    for bad, match in (
        ({DA: 0.5}, "arm feature 6"),
        ({0: 0.0}, "arm_feature_prior_scale"),
        ({-1: 0.5}, "arm_feature_prior_scale"),
        ({0: float("inf")}, "arm_feature_prior_scale"),
    ):
        with pytest.raises(ConfigError, match=match):
            FactoredValueConfig(
                n_context_features=DC, n_arm_features=DA, arm_feature_prior_scale=bad
            )


@pytest.mark.parametrize(
    ("click_model", "half_life", "value_prior", "contracts"), list(BEFORE)[::3]
)
@pytest.mark.heavy
def test_empty_or_unit_scales_decide_byte_identically(
    click_model, half_life, value_prior, contracts
):
    """Empty (the default) or 1 on every feature: arms and propensities to the bit as
    recorded before the option existed."""
    settings, want = recorded_case(click_model, half_life, value_prior, contracts)
    assert decision_digest(policy(**settings), contracts) == want
    ones = {i: 1.0 for i in range(DA)}
    assert decision_digest(policy(arm_feature_prior_scale=ones, **settings), contracts) == want
