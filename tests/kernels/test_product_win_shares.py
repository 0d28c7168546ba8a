"""The factored family's pruned Thompson win shares against every draw made: the same
winner on every bank row, so the same probabilities to the bit, whatever the weights
(pruning needs non-negative ones), spreads, ties and the lead's position."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.kernels import factored as kf
from tests import naive

M = 256


def case(seed: int, n: int, spread: float):
    rng = np.random.default_rng(seed)
    mean3 = np.vstack([rng.normal(-3.0, 1.0, n), rng.normal(-1.5, 1.0, n), rng.normal(0, 0.5, n)])
    sd3 = spread * rng.gamma(2.0, 0.3, (3, n))
    z = rng.standard_normal((n + 3, 3 * M))
    rate = rng.uniform(0.0, 0.1, n + 5)
    cand = rng.permutation(n + 5)[:n].astype(np.int64)
    if seed == 2:  # arms whose group pays nothing: value 0 on every row, ties at 0
        rate[cand[: (n + 1) // 2]] = 0.0
    return cand, mean3, sd3, np.array([0.8]), rate, z


def shares(cand, mean3, sd3, noise_var, rate, weights, z, lead=None):
    """The kernel's winners and shares; the lead is the largest posterior mean value, as in
    the decide kernel, or candidate ``lead`` when given."""
    n = cand.shape[0]
    mean_value = np.empty(n)
    kf.expected_values(cand, mean3, sd3, 1.0, noise_var, rate, weights, mean_value)
    if lead is not None:
        mean_value[:] = 0.0
        mean_value[lead] = 1.0
    best, arg, p = np.empty(2 * M), np.empty(M, dtype=np.int64), np.empty(n)
    kf.product_win_shares(cand, mean3, sd3, noise_var, rate, weights, z, best, arg, p,
                          mean_value)  # fmt: skip
    return arg, p


WEIGHTS = {
    "gmv only (the scenario's objective)": [0.0, 0.0, 0.1, 150.0, 0.0],
    "gmv only, order offset": [0.0, 0.0, 0.1, 50.0, -2.9],
    "order only": [0.0, 1.0, 0.0, 50.0, 0.0],
    "click only": [0.3, 0.0, 0.0, 50.0, 0.0],
    "all three (no pruning)": [0.01, 0.5, 0.1, 50.0, -2.9],
    "a negative weight (no pruning)": [-0.02, 0.5, 0.1, 50.0, 0.0],
}


@pytest.mark.parametrize("weights", list(WEIGHTS))
@pytest.mark.parametrize(("n", "spread"), [(1, 1.0), (3, 0.05), (23, 1.0), (23, 0.1), (60, 3.0)])
def test_pruned_win_shares_are_every_draws_win_shares(weights, n, spread):
    w = np.array(WEIGHTS[weights])
    for seed in range(4):
        cand, mean3, sd3, noise_var, rate, z = case(seed, n, spread)
        arg, p = shares(cand, mean3, sd3, noise_var, rate, w, z)
        ref_arg, ref_p = naive.product_win_shares(cand, mean3, sd3, noise_var, rate, w, z)
        np.testing.assert_array_equal(arg, ref_arg)
        np.testing.assert_array_equal(p, ref_p)
        assert p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("lead", [None, 0, 1, 3, 4])
def test_ties_go_to_the_first_candidate_whatever_the_lead(lead):
    """Candidates with no spread and equal values tie on every row: the first in request
    order wins, also when the twin after it, or any other candidate, is drawn first."""
    cand, mean3, sd3, noise_var, rate, z = case(1, 5, 1.0)
    sd3[:, [1, 3]] = 0.0
    mean3[:, 3] = mean3[:, 1] = [3.0, 3.0, 1.0]
    rate[cand[1]] = rate[cand[3]] = 0.2
    w = np.array(WEIGHTS["gmv only (the scenario's objective)"])
    arg, p = shares(cand, mean3, sd3, noise_var, rate, w, z, lead)
    ref_arg, ref_p = naive.product_win_shares(cand, mean3, sd3, noise_var, rate, w, z)
    np.testing.assert_array_equal(arg, ref_arg)
    np.testing.assert_array_equal(p, ref_p)
    assert p[1] > 0.5 and p[3] == 0.0  # the tied pair: the first takes its rows
