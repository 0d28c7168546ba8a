"""The factored value family: each factor against its closed form or batch reference, the
product predictive against Monte Carlo, outcome validation, snapshots and fleet merges."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.config import FactoredValueConfig, ObjectiveConfig
from allocator.errors import InvalidInputError
from allocator.policies import make_policy, policy_class
from allocator.registry import ArmRegistry
from tests.naive import logistic_map

DC, DA, K = 3, 2, 6
OBJECTIVE = ObjectiveConfig(click=0.01, order=0.5, gmv=0.1, take_rates={"shop": 0.05, "p": 0.03})


def registry() -> ArmRegistry:
    reg = ArmRegistry(capacity=8)
    reg.add(["p0", "p1"], "p")
    reg.add([f"m{i}" for i in range(K - 2)], "shop")
    return reg


FEATURES = np.column_stack([np.ones(K), np.linspace(-1, 1, K)])
#: the true click and order log-odds weights over vec(f ⊗ x)
THETA_CLICK = np.array([-0.6, 0.5, -0.3, 0.4, 0.2, -0.5])
THETA_ORDER = np.array([0.1, -0.4, 0.6, -0.5, 0.3, 0.2])


def policy(seed: int = 3, **kw):
    cfg = FactoredValueConfig(
        n_context_features=DC, n_arm_features=DA, objective=OBJECTIVE, typical_order_value=50.0,
        value_log_sd=0.8, **kw,
    )  # fmt: skip
    return make_policy(cfg, registry(), seed=seed, arm_features=FEATURES)


def joint(arms, xs):
    f = FEATURES[arms]
    return (f[:, :, None] * xs[:, None, :]).reshape(arms.shape[0], -1)


def events(rng, n):
    """Impressions with consistent events: orders only after clicks, values only with orders."""
    arms = rng.integers(0, K, n)
    xs = np.column_stack([np.ones(n), rng.normal(size=(n, DC - 1))])
    phi = joint(arms, xs)
    click = (rng.random(n) < 1 / (1 + np.exp(-phi @ THETA_CLICK))).astype(float)
    order = click * (rng.random(n) < 1 / (1 + np.exp(-phi @ THETA_ORDER)))
    gmv = order * np.exp(rng.normal(4.0, 0.6, n))
    return arms, xs, click, order, gmv


def test_value_factor_is_the_normal_inverse_gamma_closed_form(rng):
    """Only impressions with an order and a value reach the value factor; its posterior
    (mean, precision, σ² shape and scale) equals the dense Normal–inverse-gamma update."""
    pol = policy()
    arms, xs, click, order, gmv = events(rng, 400)
    gmv[np.flatnonzero(order)[:5]] = 0.0  # orders whose value was not reported
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    seen = gmv > 0
    phi = joint(arms[seen], xs[seen])
    y = np.log(gmv[seen] / 50.0)
    a = np.eye(phi.shape[1]) + phi.T @ phi
    mean = np.linalg.solve(a, phi.T @ y)
    got_mean, got_a = pol.factor_posterior("value_")
    np.testing.assert_allclose(got_a, a, rtol=1e-10)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-8, atol=1e-10)
    shape, scale = pol.noise_posterior()
    assert shape == pytest.approx(2.0 + seen.sum() / 2.0)
    assert scale == pytest.approx(0.8**2 + 0.5 * (y @ y - mean @ a @ mean), rel=1e-9)
    pol.refresh()  # σ² = its posterior mean; the log value's sd is 0.6 here
    assert pol.state.noise_var[0] == pytest.approx(scale / (shape - 1.0))
    assert 0.5**2 < pol.state.noise_var[0] < 0.7**2


def test_click_and_order_factors_match_a_batch_newton_map(rng):
    """The online Laplace factors (no forgetting) against the batch MAP on the rows each
    one observes: every impression for the click, the clicked ones for the order."""
    pol = policy()
    arms, xs, click, order, gmv = events(rng, 3000)
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    phi = joint(arms, xs)
    zero = np.zeros(phi.shape[1])
    for prefix, rows, ys in (("", slice(None), click), ("order_", click == 1, order)):
        ref, hess = logistic_map(phi[rows], ys[rows], 1.0, zero)
        got, prec = pol.factor_posterior(prefix)
        gap_sd = (np.abs(got - ref) / np.sqrt(np.diag(np.linalg.inv(hess)))).max()
        gap_prec = np.abs(prec - hess).max() / np.abs(hess).max()
        print(f"{prefix or 'click_'}: |online − MAP| ≤ {gap_sd:.3f} sd, precision {gap_prec:.3f}")
        # the tolerances of the logistic families' own check (tests/policies/test_logistic)
        assert gap_sd <= 0.4 and gap_prec <= 0.05, prefix


def test_product_predictive_matches_monte_carlo(rng):
    """The posterior mean value (probit predictives × log-normal mean) against the mean of
    the value over 4·10^5 joint posterior draws of the three factors' weights."""
    pol = policy()
    arms, xs, click, order, gmv = events(rng, 300)
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    pol.refresh()
    s = pol.state
    x = np.array([[1.0, 0.3, -0.5]])
    n = 400_000
    for arm in (0, 3):
        phi = joint(np.array([arm]), x)[0]
        draws = []
        for mu, a_inv, scale in ((s.mu, s.a_inv, 1.0), (s.order_mu, s.order_a_inv, 1.0),
                                 (s.value_mu, s.value_a_inv, s.noise_var[0])):  # fmt: skip
            sd = np.sqrt(scale * phi @ a_inv @ phi)
            draws.append(phi @ mu + sd * rng.standard_normal(n))
        c, o = 1 / (1 + np.exp(-draws[0])), 1 / (1 + np.exp(-draws[1]))
        v = 50.0 * np.exp(draws[2] + s.noise_var[0] / 2)
        rate = OBJECTIVE.take_rates["p" if arm < 2 else "shop"]
        mc = c * (OBJECTIVE.click + o * (OBJECTIVE.order + OBJECTIVE.gmv * rate * v))
        got = pol.predictive_value([arm], x)[0]
        # the probit approximation is within 0.02 of each probability: 3 % of the product
        assert got == pytest.approx(mc.mean(), rel=0.03), arm


def test_missing_factors_are_not_learned(rng):
    """No click: the order and value factors are untouched; an order without a reported
    value: the value factor is untouched; the clock ticks once per impression."""
    pol = policy()
    before = {k: v.copy() for k, v in pol.state.snapshot().items()}
    x = np.array([[1.0, 0.2, 0.1], [1.0, -0.3, 0.4]])
    pol.learn_outcomes([0, 1], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0], None, x)
    after = pol.state.snapshot()
    assert int(after["clock"][0]) == 2
    assert not np.array_equal(after["g"], before["g"])
    assert np.count_nonzero(after["order_g"]) > 0  # the clicked impression only
    np.testing.assert_allclose(after["order_g"], joint(np.array([1]), x[1:]).T
                               @ joint(np.array([1]), x[1:]) * 0.25)  # fmt: skip
    for name in ("value_g", "value_h", "value_stats"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


@pytest.mark.parametrize(
    ("click", "order", "gmv", "match"),
    [
        ([0.0], [1.0], [0.0], "an order without a click"),
        ([1.0], [0.0], [20.0], "a value without an order"),
        ([0.5], [0.0], [0.0], r"click\[0\] = 0.5: factored_value expects 0 or 1"),
        ([1.0], [2.0], [0.0], "order"),
        ([1.0], [1.0], [-3.0], "negative"),
        ([1.0], [1.0], [np.nan], "gmv"),
        ([1.0, 0.0], [1.0], [5.0], "order"),
    ],
)
def test_inconsistent_outcomes_are_refused_and_change_nothing(click, order, gmv, match):
    pol = policy()
    before = {k: v.copy() for k, v in pol.state.snapshot().items()}
    with pytest.raises(InvalidInputError, match=match):
        pol.learn_outcomes([0] * len(click), click, order, gmv, None, np.ones((len(click), DC)))
    with pytest.raises(InvalidInputError):
        pol.check_outcomes(click, order, gmv, None)
    for name, value in pol.state.snapshot().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_a_scalar_reward_is_refused():
    pol = policy()
    with pytest.raises(InvalidInputError, match="learns from outcomes"):
        pol.update_batch([0], [1.0], np.ones((1, DC)))
    assert pol.clock == 0


#: the two click models (the hybrid's offsets a priori as wide as THETA_CLICK's weights)
CLICK_MODELS = {"shared": {}, "hybrid": {"click_model": "hybrid", "offset_sd": 0.5}}


@pytest.mark.parametrize("click_model", sorted(CLICK_MODELS))
def test_snapshot_round_trip_decides_identically(rng, click_model):
    pol = policy(seed=5, **CLICK_MODELS[click_model])
    arms, xs, click, order, gmv = events(rng, 500)
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    arrays, meta = pol.export_state()
    twin = policy_class(pol.config).restore(pol.config, registry(), 5, arrays, meta)
    assert type(twin) is type(pol)
    ptr, idx = np.array([0, K, 2 * K]), np.tile(np.arange(K), 2)
    ctx = rng.normal(size=(2, DC))
    a, b = pol.decide_batch(ptr, idx, ctx), twin.decide_batch(ptr, idx, ctx)
    np.testing.assert_array_equal(a.arms, b.arms)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    twin.learn_outcomes(arms, click, order, gmv, None, xs)
    pol.refresh()
    twin.refresh()
    a, b = pol.decide_batch(ptr, idx, ctx), twin.decide_batch(ptr, idx, ctx)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_replica_deltas_merge_into_the_single_learner_value_factor(rng):
    """Without forgetting the value factor is conjugate: two replicas' deltas merged equal
    one model fed everything (the logistic factors are linearised where each replica was)."""
    single, learner = policy(), policy()
    replicas = [policy(), policy()]
    for rep in replicas:
        arms, xs, click, order, gmv = events(rng, 300)
        rep.learn_outcomes(arms, click, order, gmv, None, xs)
        single.learn_outcomes(arms, click, order, gmv, None, xs)
        learner.merge(rep.export_delta())
    for name in ("value_g", "value_h", "value_stats", "n_obs"):
        np.testing.assert_allclose(
            getattr(learner.state, name), getattr(single.state, name), rtol=1e-12, err_msg=name
        )
    delta = replicas[0].export_delta()
    delta["order_g"] = -1e4 * np.eye(DC * DA)  # finite, symmetric, not a sum of factors
    with pytest.raises(InvalidInputError, match="order_g"):
        learner.merge(delta)


def test_thompson_ranks_by_the_product_not_by_any_one_factor(rng):
    """Arm 2 clicks most but never sells; arm 5 clicks less and sells: once learned, greedy
    on the posterior mean value picks arm 5 and Thompson gives it most of the mass."""
    pol = policy(refresh_every=10**9)
    n = 4000
    arms = rng.choice([2, 5], n)
    xs = np.column_stack([np.ones(n), rng.normal(size=(n, DC - 1)) * 0.1])
    click = (rng.random(n) < np.where(arms == 2, 0.6, 0.3)).astype(float)
    order = click * (arms == 5) * (rng.random(n) < 0.5)
    gmv = order * np.exp(rng.normal(4.0, 0.5, n))
    pol.learn_outcomes(arms, click, order, gmv, None, xs)
    pol.refresh()
    x = np.array([1.0, 0.0, 0.0])
    assert pol.predictive_value([5], [x])[0] > 3 * pol.predictive_value([2], [x])[0]
    pol.decide([2, 5], x)
    assert pol.probabilities[1] > 0.9
