"""Logged propensities are the exact probabilities of the implemented procedure.

From a frozen state the probability vector of a request is fixed, so the empirical
frequencies of 10^5 decisions must fall inside per-arm binomial bounds (5 sigma). With
varying contexts and candidate subsets, each arm's count must match the sum of its
per-decision probabilities within the same bound (a calibration check).
"""

from __future__ import annotations

import numpy as np
import pytest

from allocator import (
    ArmRegistry,
    BetaBernoulliConfig,
    Engine,
    FactoredValueConfig,
    HybridLinearConfig,
    HybridLogisticConfig,
    LinearGaussianConfig,
    LogisticConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
    make_policy,
)
from allocator.constraints import ConstraintSet
from tests.conftest import make_registry
from tests.requests import random_requests

N = 100_000


def assert_binomial(counts, expected, variance):
    slack = 5.0 * np.sqrt(variance) + 1.0
    worst = np.max(np.abs(counts - expected) / slack)
    print(f"worst |count - expected| / bound = {worst:.3f}")
    assert (np.abs(counts - expected) <= slack).all(), (counts, expected)


def frozen_beta_policy(rng, k=12):
    cfg = BetaBernoulliConfig(epsilon=0.05, refresh_every=10**9, bank_rows=128)
    pol = make_policy(cfg, make_registry(k), seed=5)
    arms = rng.integers(0, k, 400)
    pol.update_batch(arms, (rng.random(400) < np.linspace(0.05, 0.3, k)[arms]).astype(float))
    pol.refresh()
    return pol


@pytest.mark.slow
def test_beta_frequencies_match_propensities_on_subsets(rng):
    pol = frozen_beta_policy(rng)
    for cand in ([3, 7, 1, 11], [0, 5], list(range(12))[::-1]):
        cand = np.asarray(cand, dtype=np.int64)
        ptr = np.arange(N + 1, dtype=np.int64) * cand.shape[0]
        out = pol.decide_batch(ptr, np.tile(cand, N))
        p = out.probabilities[: cand.shape[0]]
        np.testing.assert_allclose(out.probabilities.reshape(N, -1), np.tile(p, (N, 1)))
        np.testing.assert_allclose(out.propensities, p[out.positions])
        counts = np.bincount(out.positions, minlength=cand.shape[0])
        assert_binomial(counts, N * p, N * p * (1 - p))
        assert (p >= 0.05 / cand.shape[0] - 1e-15).all()


@pytest.mark.heavy
def test_single_decisions_match_propensities(rng):
    pol = frozen_beta_policy(rng)
    cand = np.array([2, 9, 4, 6], dtype=np.int64)
    pol.decide(cand)
    p = pol.probabilities
    counts = np.zeros(4)
    for _ in range(20_000):
        choice = pol.decide(cand)
        assert choice.propensity == p[choice.position]
        counts[choice.position] += 1
    assert_binomial(counts, 20_000 * p, 20_000 * p * (1 - p))


def calibration(pol, rng, k, make_context, n_feat, engine=None):
    """Random subsets and contexts per request: per-arm count vs Σ propensity (through
    ``engine``'s contracts when given, its requests spread over a day)."""
    ptr, idx = random_requests(rng, N, k)
    xs = make_context(N, n_feat)
    if engine is None:
        out = pol.decide_batch(ptr, idx, xs)
    else:
        out = engine.decide_batch(ptr, idx, xs, T0 + np.linspace(0, 86_400, N))
        assert (out.adjusted != 0).any()  # the contracts moved mass
    counts = np.bincount(out.arms, minlength=k)
    expected = np.bincount(idx, weights=out.probabilities, minlength=k)
    variance = np.bincount(idx, weights=out.probabilities * (1 - out.probabilities), minlength=k)
    assert_binomial(counts, expected, variance)
    sums = np.add.reduceat(out.probabilities, ptr[:-1])
    np.testing.assert_allclose(sums, 1.0, atol=1e-9)


@pytest.mark.slow
def test_beta_calibration_on_random_subsets(rng):
    calibration(frozen_beta_policy(rng), rng, 12, lambda n, d: None, 0)


@pytest.mark.slow
def test_linear_calibration_on_random_subsets_and_contexts(rng):
    k, d = 10, 5
    cfg = LinearGaussianConfig(n_features=d, epsilon=0.02, refresh_every=10**9, bank_rows=64)
    pol = make_policy(cfg, make_registry(k), seed=9)
    xs = rng.normal(size=(300, d))
    pol.update_batch(rng.integers(0, k, 300), rng.random(300), xs)
    pol.refresh()
    calibration(pol, rng, k, lambda n, dd: rng.normal(size=(n, dd)), d)


@pytest.mark.slow
def test_shared_linear_calibration(rng):
    k, da, dc = 30, 3, 4
    cfg = SharedLinearConfig(
        n_context_features=dc, n_arm_features=da, refresh_every=10**9, bank_rows=64
    )
    pol = make_policy(cfg, make_registry(k), seed=4, arm_features=rng.normal(size=(k, da)))
    pol.update_batch(rng.integers(0, k, 200), rng.random(200), rng.normal(size=(200, dc)))
    pol.refresh()
    calibration(pol, rng, k, lambda n, dd: rng.normal(size=(n, dd)), dc)


T0 = 1_760_000_000.0
CONTRACTS = {"constraints": [
    {"name": "partner_floor", "kind": "floor", "target": {"group": "partner"},
     "schedule": {"start": T0, "end": T0 + 86_400, "start_value": 0.4, "end_value": 0.1}},
    {"name": "shop_cap", "kind": "cap", "target": {"group": "mini_shop"},
     "schedule": {"start": T0, "end": T0 + 86_400, "start_value": 0.7}},
]}  # fmt: skip


@pytest.mark.heavy
@pytest.mark.parametrize("contracts", [False, True], ids=["plain", "contracts"])
@pytest.mark.parametrize(
    "kind", ["logistic", "logistic_refit", "shared_logistic", "hybrid_linear", "hybrid_logistic"]
)
def test_logistic_calibration(rng, kind, contracts):
    """The logistic (also after a buffered MAP refit) and hybrid families, with and without
    contracts (a decaying partner floor and a Mini Shop cap): each arm's count within 5σ of
    its summed propensities, 10^5 requests."""
    k, d, da = 12, 4, 3
    reg = ArmRegistry(capacity=16)
    reg.add([f"p{i}" for i in range(3)], "partner")
    reg.add([f"m{i}" for i in range(k - 3)], "mini_shop")
    if kind.startswith("logistic"):
        cfg = LogisticConfig(
            n_features=d, epsilon=0.02, refresh_every=10**9, bank_rows=64,
            refit_buffer=64 if kind == "logistic_refit" else 0,
        )  # fmt: skip
        pol = make_policy(cfg, reg, seed=9)
    else:
        cls = {"shared_logistic": SharedLogisticConfig, "hybrid_linear": HybridLinearConfig,
               "hybrid_logistic": HybridLogisticConfig}[kind]  # fmt: skip
        cfg = cls(n_context_features=d, n_arm_features=da, refresh_every=10**9, bank_rows=64)
        pol = make_policy(cfg, reg, seed=9, arm_features=rng.normal(size=(k, da)))
    xs = rng.normal(size=(300, d))
    pol.update_batch(rng.integers(0, k, 300), rng.integers(0, 2, 300).astype(float), xs)
    pol.refresh()
    engine = Engine(pol, ConstraintSet.model_validate(CONTRACTS)) if contracts else None
    calibration(pol, rng, k, lambda n, dd: rng.normal(size=(n, dd)), d, engine)


@pytest.mark.heavy
@pytest.mark.parametrize("click_model", ["shared", "hybrid"])
@pytest.mark.parametrize("contracts", [False, True], ids=["plain", "contracts"])
def test_factored_value_calibration(rng, contracts, click_model):
    """The factored value family (three factors sampled per bank row, ranked by their
    product; the click with or without per-arm offsets), with and without contracts: counts
    within 5σ of Σ propensities, 10^5 requests."""
    k, d, da = 12, 4, 3
    reg = ArmRegistry(capacity=16)
    reg.add([f"p{i}" for i in range(3)], "partner")
    reg.add([f"m{i}" for i in range(k - 3)], "mini_shop")
    objective = {"click": 0.01, "order": 0.2, "gmv": 0.1,
                 "take_rates": {"partner": 0.03, "mini_shop": 0.05}}  # fmt: skip
    cfg = FactoredValueConfig(
        n_context_features=d, n_arm_features=da, refresh_every=10**9, bank_rows=64,
        objective=objective, typical_order_value=50.0, click_model=click_model,
    )  # fmt: skip
    pol = make_policy(cfg, reg, seed=9, arm_features=rng.normal(size=(k, da)))
    click = rng.integers(0, 2, 300).astype(float)
    order = click * rng.integers(0, 2, 300)
    gmv = order * rng.lognormal(4.0, 0.6, 300)
    pol.learn_outcomes(rng.integers(0, k, 300), click, order, gmv, None, rng.normal(size=(300, d)))
    pol.refresh()
    engine = Engine(pol, ConstraintSet.model_validate(CONTRACTS)) if contracts else None
    calibration(pol, rng, k, lambda n, dd: rng.normal(size=(n, dd)), d, engine)


def test_ucb_and_greedy_put_mass_on_argmax_plus_epsilon(rng):
    k, d = 6, 3
    for rule in ("ucb", "greedy"):
        cfg = LinearGaussianConfig(n_features=d, rule=rule, epsilon=0.1)
        pol = make_policy(cfg, make_registry(k), seed=1)
        pol.update_batch(rng.integers(0, k, 100), rng.random(100), rng.normal(size=(100, d)))
        pol.refresh()
        pol.decide(np.arange(k), rng.normal(size=d))
        p = np.sort(pol.probabilities)
        np.testing.assert_allclose(p, [0.1 / k] * (k - 1) + [0.9 + 0.1 / k])
