"""Exact propensities at 10^6 arms, with the bank sized for the catalogue (16 rows by
default): each arm's count over 50,000 decisions matches the sum of its propensities
within 5 sigma. The disjoint linear families keep a d×d state per arm, so 10^6 arms is
not a size they are built for; they are checked at small catalogues in test_propensities."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import (
    ArmRegistry,
    BetaBernoulliConfig,
    NormalGammaConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
    make_policy,
)
from tests.policies.test_propensities import assert_binomial

N_ARMS = 1_000_000
N = 50_000

CONFIGS = {
    "beta_bernoulli": BetaBernoulliConfig(kind="beta_bernoulli", refresh_every=10**9),
    "normal_gamma": NormalGammaConfig(kind="normal_gamma", refresh_every=10**9),
    "shared_linear": SharedLinearConfig(
        kind="shared_linear", n_context_features=2, n_arm_features=2, refresh_every=10**9
    ),
    "shared_logistic": SharedLogisticConfig(
        kind="shared_logistic", n_context_features=2, n_arm_features=2, refresh_every=10**9
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_counts_match_propensities_at_a_million_arms(kind):
    rng = np.random.default_rng(17)
    registry = ArmRegistry.from_columns(
        np.array([f"m{i}" for i in range(N_ARMS)]), ["mini_shop"], np.zeros(N_ARMS, np.int64)
    )
    cfg = CONFIGS[kind]
    feats = rng.normal(size=(N_ARMS, 2)) if cfg.USES_ARM_FEATURES else None
    pol = make_policy(cfg, registry, seed=3, arm_features=feats)
    pool = rng.choice(N_ARMS, 400, replace=False)  # spread over the catalogue
    d = pol.n_features
    learn = rng.choice(pool, 3000)
    xs = None if d is None else rng.normal(size=(3000, d))
    pol.update_batch(learn, (rng.random(3000) < 0.3).astype(float), xs)
    pol.refresh()
    if kind in ("beta_bernoulli", "normal_gamma"):
        assert pol.bank_rows == 16
    sizes = rng.integers(2, 30, N)
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    idx = np.concatenate([rng.choice(pool, s, replace=False) for s in sizes]).astype(np.int64)
    out = pol.decide_batch(ptr, idx, None if d is None else rng.normal(size=(N, d)))
    counts = np.bincount(out.arms, minlength=N_ARMS)[pool]
    expected = np.bincount(idx, weights=out.probabilities, minlength=N_ARMS)[pool]
    variance = np.bincount(
        idx, weights=out.probabilities * (1 - out.probabilities), minlength=N_ARMS
    )[pool]
    assert_binomial(counts, expected, variance)
    np.testing.assert_allclose(np.add.reduceat(out.probabilities, ptr[:-1]), 1.0, atol=1e-9)
