"""A nonstationary replay's summary: the effective sample size of its weights is that of
their ratios, whatever their scale (a propensity at its 2.2e-308 floor gives a weight whose
square is past the float range)."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.replay.trace import READ_CHUNK, Trace, summarise


def trace(weights: np.ndarray) -> Trace:
    n = weights.shape[0]
    rng = np.random.default_rng(5)
    accepted = rng.random(n) < 0.3
    return Trace(rng.random(n), np.full(n, 0.5), accepted, weights, (0.0, 1.0), (0.0, 1.0))


@pytest.mark.parametrize("scale", [1e-300, 1.0, 1e300, 4.4e307])
def test_the_ess_of_weights_is_that_of_their_ratios_at_any_scale(scale):
    """Read in three pieces, the largest weight in a later piece than the first: the
    running sums are rescaled when it arrives."""
    rng = np.random.default_rng(1)
    ratios = rng.random(2 * READ_CHUNK + 7)
    ratios[READ_CHUNK + 3] = 1.0  # the largest, in the second piece
    ratios[-1] = 0.9
    want = ratios.sum() ** 2 / np.square(ratios).sum()
    got = summarise(trace(ratios * scale), ratios.shape[0], 0.05, ratios.shape[0]).ess
    assert got == pytest.approx(want, rel=1e-9)


def test_one_weight_at_the_propensity_floor_dominates_the_ess():
    """1/1e-300 among unit weights: an OverflowError at ``w_sum**2`` before; one heavy
    weight leaves an effective sample of one."""
    weights = np.ones(1000)
    weights[10] = 1e300
    assert summarise(trace(weights), 1000, 0.05, 1000).ess == pytest.approx(1.0)
    assert summarise(trace(np.zeros(1000)), 1000, 0.05, 1000).ess == 0.0
