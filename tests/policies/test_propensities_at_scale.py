"""Exact propensities at 10^6 arms, for every family, with state sized for the catalogue
(the per-arm banks hold 16 float32 rows at 10^6 arms, filled in blocks).

Each request offers 200 candidates: 190 from 2,000 "known" merchants spread over the
catalogue (they have observations, so their propensities differ) and 10 fresh ones from
the rest (prior draws). Over 20,000 decisions the count of every arm expected to be
chosen at least 5 times matches the sum of its propensities within 5 sigma; so do the
other arms pooled in catalogue order (about 50 expected choices a pool), and the fresh
arms' total; and the candidates binned by logged propensity (10 bins of 2,000 expected
choices: the calibration check that catches a misreport, such as p -> p^1.1 renormalised,
which per-arm bounds at these counts cannot see). Within one decision the indicators are
negatively correlated, so the summed per-pair variance bounds a pool's from above.
The disjoint families keep a d×d state per arm, so they run at d = 2 (about 130 MB at
10^6 arms); d = 16 at that size would need 2.3 GB and is not a size they are built for.
"""

from __future__ import annotations

import numpy as np
import pytest

from allocator import (
    ArmRegistry,
    BetaBernoulliConfig,
    HybridLinearConfig,
    HybridLogisticConfig,
    LinearGaussianConfig,
    LogisticConfig,
    NormalGammaConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
    make_policy,
)
from tests.policies.test_propensities import assert_binomial

N_ARMS = 1_000_000
N = 20_000
KNOWN, OFFERED_KNOWN, OFFERED_FRESH = 2_000, 190, 10
#: arms expected to be chosen this often are checked one by one; the others are pooled
#: into groups of about POOLED expected choices (a 5-sigma normal bound is not honest for
#: an arm expected 0.1 times: 3 choices then have probability 1e-4 per arm)
BUSY, POOLED = 5.0, 50.0

_FROZEN = {"refresh_every": 10**9}
_SHARED = {"n_context_features": 2, "n_arm_features": 2, **_FROZEN}
CONFIGS = {
    "beta_bernoulli": BetaBernoulliConfig(**_FROZEN),
    "normal_gamma": NormalGammaConfig(**_FROZEN),
    "linear_gaussian": LinearGaussianConfig(n_features=2, **_FROZEN),
    "logistic": LogisticConfig(n_features=2, **_FROZEN),
    "shared_linear": SharedLinearConfig(**_SHARED),
    "shared_logistic": SharedLogisticConfig(**_SHARED),
    "hybrid_linear": HybridLinearConfig(**_SHARED),
    "hybrid_logistic": HybridLogisticConfig(**_SHARED),
}


@pytest.fixture(scope="module")
def arm_ids() -> np.ndarray:
    return np.array([f"m{i}" for i in range(N_ARMS)])


def requests(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known arms (every 500th), and the CSR candidates of ``N`` requests: 190 known and
    10 fresh arms each, distinct within a request."""
    known = np.arange(0, N_ARMS, N_ARMS // KNOWN, dtype=np.int64)
    fresh_slots = N_ARMS - KNOWN  # fresh arm j -> the j-th index that is not a known arm
    per = OFFERED_KNOWN + OFFERED_FRESH
    idx = np.empty(N * per, dtype=np.int64)
    for r in range(N):
        j = rng.choice(fresh_slots, OFFERED_FRESH, replace=False)
        idx[r * per : r * per + OFFERED_KNOWN] = rng.choice(known, OFFERED_KNOWN, replace=False)
        idx[r * per + OFFERED_KNOWN : (r + 1) * per] = j + j // (N_ARMS // KNOWN - 1) + 1
    return known, np.arange(0, N * per + 1, per, dtype=np.int64), idx


def calibration(idx: np.ndarray, chosen: np.ndarray, p: np.ndarray) -> list[np.ndarray]:
    """Choices, expected choices and the variance bound of the (request, candidate) pairs
    in 10 bins of equal expected choices, by the propensity they were logged with."""
    hit = (idx == np.repeat(chosen, idx.size // chosen.size)).astype(np.float64)
    order = np.argsort(p, kind="stable")
    bins = (np.cumsum(p[order]) // (chosen.size / 10)).astype(np.int64)
    return [np.bincount(bins, weights=v[order]) for v in (hit, p, p * (1 - p))]


def assert_exact(idx: np.ndarray, arms: np.ndarray, p: np.ndarray, known: np.ndarray) -> None:
    """The checks of the module docstring on decisions ``arms`` (R,) over CSR candidates
    ``idx`` with logged probabilities ``p`` (aligned with ``idx``)."""
    size = int(max(idx.max(), arms.max())) + 1
    counts = np.bincount(arms, minlength=size).astype(np.float64)
    expected = np.bincount(idx, weights=p, minlength=size)
    variance = np.bincount(idx, weights=p * (1 - p), minlength=size)
    offered = np.flatnonzero(np.bincount(idx, minlength=size))
    assert offered.size > 5 * arms.size  # the fresh arms spread over the catalogue
    busy = offered[expected[offered] >= BUSY]
    assert_binomial(counts[busy], expected[busy], variance[busy])
    quiet = offered[expected[offered] < BUSY]  # pooled, in catalogue order
    pool = (np.cumsum(expected[quiet]) // POOLED).astype(np.int64)
    assert_binomial(*(np.bincount(pool, weights=v[quiet]) for v in (counts, expected, variance)))
    assert_binomial(*calibration(idx, arms, p))
    fresh = np.setdiff1d(offered, known)  # their total: one count with real power
    assert_binomial(*(np.array([v[fresh].sum()]) for v in (counts, expected, variance)))
    print(f"known arms' share {expected[known].sum() / arms.size:.4f}")
    assert expected[known].sum() > 0.05 * arms.size and expected[fresh].sum() > 5  # both won


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_counts_match_propensities_at_a_million_arms(kind, arm_ids):
    rng = np.random.default_rng(17)
    registry = ArmRegistry.from_columns(arm_ids, ["mini_shop"], np.zeros(N_ARMS, np.int64))
    cfg = CONFIGS[kind]
    feats = rng.normal(size=(N_ARMS, 2)) if cfg.USES_ARM_FEATURES else None
    pol = make_policy(cfg, registry, seed=3, arm_features=feats)
    known, ptr, idx = requests(rng)
    assert not np.isin(idx.reshape(N, -1)[:, OFFERED_KNOWN:], known).any()
    d = pol.n_features
    learn = rng.choice(known, 40 * KNOWN)
    xs = None if d is None else rng.normal(size=(learn.size, d))
    success = np.linspace(0.02, 0.98, N_ARMS)[learn]  # known arms differ
    pol.update_batch(learn, (rng.random(learn.size) < success).astype(float), xs)
    pol.refresh()
    if kind in ("beta_bernoulli", "normal_gamma"):
        assert pol.bank_rows == 16 and pol.state.bank.dtype == np.float32
    out = pol.decide_batch(ptr, idx, None if d is None else rng.normal(size=(N, d)))
    assert_exact(idx, out.arms, out.probabilities, known)
    np.testing.assert_allclose(np.add.reduceat(out.probabilities, ptr[:-1]), 1.0, atol=1e-9)
