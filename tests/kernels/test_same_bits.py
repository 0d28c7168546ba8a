"""Kernels rewritten for speed keep their bits: the sums a replay's decisions and its
reward model are made of run in the order they always did, so a replay's acceptances,
values and intervals do not move (decisions compare float32 scores over the bank: a last
bit could flip one)."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.kernels import linear as kl
from allocator.kernels import ope as kope
from tests import naive


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 7, 8, 13, 16, 17])
def test_linear_scores_are_the_row_by_row_sums(d):
    """Four rows of ``A⁻¹x`` at a time, each summed in index order: every d, including
    those that leave one to three rows over, gives the row-at-a-time bits."""
    rng = np.random.default_rng(d)
    k = 6
    x = rng.normal(size=d)
    mu = rng.normal(size=(k, d))
    b = rng.normal(size=(k, d, d))
    a_inv = np.einsum("kij,klj->kil", b, b) + 0.01 * rng.normal(size=(k, d, d))  # not symmetric
    cand = np.array([5, 0, 3, 2], dtype=np.int64)
    mean, sd = np.empty(4), np.empty(4)
    kl.linear_scores(x, cand, mu, a_inv, 0.7, mean, sd)
    ref_mean, ref_sd = naive.sequential_linear_scores(x, cand, mu, a_inv, 0.7)
    np.testing.assert_array_equal(mean, ref_mean)
    np.testing.assert_array_equal(sd, ref_sd)


@pytest.mark.parametrize("subset", [False, True])
def test_logistic_fit_is_the_row_by_row_newton(subset):
    """Pooled and per-arm Newton steps over every row (or the included ones), gradient and
    Hessian summed row by row: the same coefficients to the bit, one arm without rows."""
    rng = np.random.default_rng(7)
    n, d, k = 160, 3, 5
    x = rng.normal(size=(n, d))
    arms = rng.integers(0, k - 1, n).astype(np.int64)  # arm k - 1 never logged
    theta = rng.normal(size=(k, d + 1))
    eta = theta[arms, 0] + np.einsum("ij,ij->i", x, theta[arms, 1:])
    rewards = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    include = rng.random(n) < 0.7 if subset else np.ones(0, dtype=np.bool_)
    coef, pooled = np.empty((k, d + 1)), np.empty(d + 1)
    kope.logistic_fit(x, arms, rewards, include, 1.5, 50, 1e-9, coef, pooled)
    ref_coef, ref_pooled = naive.newton_logistic_fit(
        x, arms, rewards, include, 1.5, 50, 1e-9, k, kope.INTERCEPT_L2
    )
    np.testing.assert_array_equal(pooled, ref_pooled)
    np.testing.assert_array_equal(coef, ref_coef)
    np.testing.assert_array_equal(coef[k - 1], pooled)
