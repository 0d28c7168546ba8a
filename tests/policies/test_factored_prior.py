"""The factored value family's log-value prior: ``value_prior_precision`` and the balanced
prior against their dense closed forms, the bound on every candidate's prior score variance
that motivates them, catalogue growth, snapshots, and exact propensities under them."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import Engine
from allocator.config import FactoredValueConfig, ObjectiveConfig
from allocator.constraints import ConstraintSet
from allocator.errors import ConfigError
from allocator.policies import make_policy, policy_class
from allocator.registry import ArmRegistry
from tests.policies.test_propensities import CONTRACTS, calibration

DC = 3
#: the groups of test_propensities' contracts, one take rate: arms differ by features only
OBJECTIVE = ObjectiveConfig(
    click=0.0, order=0.0, gmv=0.1, take_rates={"partner": 0.05, "mini_shop": 0.05}
)
#: two one-hot partners, then merchants with 3 and 4 non-zero features (group, category,
#: a rating, a price level) and one with small continuous features only
FEATURES = np.array([
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 1.0, 0.0, 0.5],
    [0.0, 0.0, 1.0, 1.0, -0.5, 0.3],
    [0.0, 0.0, 1.0, 0.0, 0.4, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.2, 0.1],
])  # fmt: skip
K, DA = FEATURES.shape


def registry(k: int = K) -> ArmRegistry:
    reg = ArmRegistry(capacity=8)
    reg.add(["p0", "p1"], "partner")
    reg.add([f"m{i}" for i in range(k - 2)], "mini_shop")
    return reg


def policy(seed: int = 3, features: np.ndarray = FEATURES, **kw):
    cfg = FactoredValueConfig(
        n_context_features=DC, n_arm_features=DA, objective=OBJECTIVE, typical_order_value=50.0,
        value_log_sd=0.8, **kw,
    )  # fmt: skip
    return make_policy(cfg, registry(features.shape[0]), seed=seed, arm_features=features)


def naive_prior(features: np.ndarray, lam: float) -> np.ndarray:
    """The balanced prior's diagonal, arm feature by arm feature, arm by arm."""
    reach = np.ones(features.shape[1])
    for f in features:
        for i in range(f.shape[0]):
            if f[i] != 0.0:
                reach[i] = max(reach[i], float(f @ f))
    return lam * np.repeat(reach, DC)


def joint(arms, xs):
    f = FEATURES[arms]
    return (f[:, :, None] * xs[:, None, :]).reshape(arms.shape[0], -1)


def prior_score_variances(pol, x):
    """σ²-free prior variance ``φᵀ P⁻¹ φ`` of every arm's log-value score in context ``x``."""
    phi = joint(np.arange(K), np.tile(x, (K, 1)))
    return np.einsum("kd,de,ke->k", phi, pol.state.value_a_inv, phi)


@pytest.mark.parametrize("value_prior", ["flat", "balanced"])
def test_value_posterior_under_the_prior_is_the_dense_solve(rng, value_prior):
    """With ``value_prior_precision`` 4 the value factor's posterior (mean, precision,
    inverse-gamma scale) equals the dense conjugate update with prior precision ``P``:
    ``4·I`` (flat) or the balanced diagonal computed arm by arm."""
    pol = policy(value_prior=value_prior, value_prior_precision=4.0)
    n = 300
    arms = rng.integers(0, K, n)
    xs = np.column_stack([np.ones(n), rng.normal(size=(n, DC - 1))])
    click = (rng.random(n) < 0.5).astype(float)
    order = click * (rng.random(n) < 0.6)
    gmv = order * np.exp(rng.normal(4.0, 0.6, n))
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    seen = gmv > 0
    phi, y = joint(arms[seen], xs[seen]), np.log(gmv[seen] / 50.0)
    prior = naive_prior(FEATURES, 4.0) if value_prior == "balanced" else np.full(DA * DC, 4.0)
    a = np.diag(prior) + phi.T @ phi
    mean = np.linalg.solve(a, phi.T @ y)
    got_mean, got_a = pol.factor_posterior("value_")
    np.testing.assert_allclose(got_a, a, rtol=1e-12)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-9, atol=1e-12)
    _, scale = pol.noise_posterior()
    assert scale == pytest.approx(0.8**2 + 0.5 * (y @ y - mean @ a @ mean), rel=1e-9)
    # the online posterior (Sherman–Morrison since the refresh at registration) agrees
    np.testing.assert_allclose(pol.state.value_a_inv, np.linalg.inv(a), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(pol.state.value_mu, mean, rtol=1e-7, atol=1e-10)
    # the click and order factors keep prior_precision 1
    assert np.allclose(np.diag(pol.factor_posterior("order_")[1] - pol.state.order_g), 1.0)


def test_the_balanced_prior_bounds_every_candidates_prior_score_variance(rng):
    """Flat: a candidate's prior log-value variance is ``‖f‖²·‖x‖²/λ``, so the merchants
    with 3–4 features are 2–2.4 times as uncertain as a one-hot partner. Balanced: none
    exceeds ``‖x‖²/λ``, the partners and each feature's widest arm reach it."""
    x = np.array([1.0, 0.7, -1.2])
    xx = x @ x
    flat = prior_score_variances(policy(value_prior_precision=2.0), x)
    np.testing.assert_allclose(flat, (FEATURES**2).sum(1) * xx / 2.0, rtol=1e-12)
    assert flat[2] > 2.0 * flat[0]
    bal = prior_score_variances(policy(value_prior="balanced", value_prior_precision=2.0), x)
    print(f"prior score variance / (‖x‖²/λ): flat {flat / (xx / 2)}, balanced {bal / (xx / 2)}")
    assert (bal <= xx / 2.0 * (1 + 1e-12)).all()
    np.testing.assert_allclose(bal[[0, 1, 3]], xx / 2.0, rtol=1e-12)
    # an arm never gets a wider prior than the flat one at the same precision
    assert (bal <= flat * (1 + 1e-12)).all()
    # Hence the posterior mean value at the prior: the convexity bonus exp(s²/2) of the
    # log-normal no longer favours the arms with more features (click and order logits
    # are 0 a priori, so every arm's predictive probabilities are 1/2).
    pol = policy(value_prior="balanced", value_prior_precision=2.0)
    pol.refresh()
    values = pol.predictive_value(np.arange(K), np.tile(x, (K, 1)))
    np.testing.assert_allclose(values[[1, 3]], values[0], rtol=1e-12)
    assert (values <= values[0] * (1 + 1e-12)).all()


def test_a_wider_newcomer_tightens_the_prior_and_a_snapshot_keeps_it(rng):
    """Registering an arm whose squared norm exceeds a feature's reach raises that
    feature's prior precision at once (the posterior is refreshed at registration); a
    restored snapshot holds the same prior and decides identically."""
    pol = policy(value_prior="balanced", value_prior_precision=4.0)
    before = pol.prior_diag("value_").copy()
    pol.registry.add(["wide"], "mini_shop")
    wide = np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    pol.sync_arms(wide)
    want = naive_prior(np.vstack([FEATURES, wide]), 4.0)
    np.testing.assert_array_equal(pol.prior_diag("value_"), want)
    assert (want >= before).all() and (want > before).any()
    np.testing.assert_allclose(pol.state.value_a_inv, np.diag(1.0 / want), rtol=1e-12)
    arrays, meta = pol.export_state()
    reg = registry()
    reg.add(["wide"], "mini_shop")
    twin = policy_class(pol.config).restore(pol.config, reg, 3, arrays, meta)
    np.testing.assert_array_equal(twin.prior_diag("value_"), want)
    ptr, idx = np.array([0, K + 1]), np.arange(K + 1)
    ctx = rng.normal(size=(1, DC))
    a, b = pol.decide_batch(ptr, idx, ctx), twin.decide_batch(ptr, idx, ctx)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_flat_default_is_the_shared_prior_precision():
    """Without ``value_prior_precision`` the value factor keeps ``prior_precision`` (the
    behaviour before the setting existed); invalid settings are refused."""
    pol = policy(prior_precision=3.0)
    np.testing.assert_array_equal(pol.prior_diag("value_"), np.full(DA * DC, 3.0))
    for bad, match in (
        ({"value_prior_precision": 0.0}, "value_prior_precision"),
        ({"value_prior_precision": -1.0}, "value_prior_precision"),
        ({"value_prior": "wide"}, "value_prior"),
    ):
        with pytest.raises(ConfigError, match=match):
            FactoredValueConfig(n_context_features=DC, n_arm_features=DA, **bad)


@pytest.mark.heavy
@pytest.mark.parametrize("click_model", ["shared", "hybrid"])
@pytest.mark.parametrize("contracts", [False, True], ids=["plain", "contracts"])
def test_balanced_prior_calibration(rng, contracts, click_model):
    """Exact propensities under the balanced prior (the bank draws every factor as
    before): counts within 5σ of Σ propensities over 10^5 requests, with and without
    contracts, both click models."""
    pol = policy(
        seed=9, refresh_every=10**9, bank_rows=64, click_model=click_model,
        value_prior="balanced", value_prior_precision=4.0,
    )  # fmt: skip
    n = 300
    click = rng.integers(0, 2, n).astype(float)
    order = click * rng.integers(0, 2, n)
    gmv = order * rng.lognormal(4.0, 0.6, n)
    pol.learn_outcomes(rng.integers(0, K, n), click, order, gmv, None, rng.normal(size=(n, DC)))
    pol.refresh()
    engine = Engine(pol, ConstraintSet.model_validate(CONTRACTS)) if contracts else None
    calibration(pol, rng, K, lambda m, d: rng.normal(size=(m, d)), DC, engine)
