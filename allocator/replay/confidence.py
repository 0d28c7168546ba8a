"""Anytime-valid intervals for IPS and DR on adaptively logged rounds.

A learning logger's propensities depend on the rewards it saw, so the logged rounds are
not independent and the bootstrap's intervals undercover. What stays true on such logs is
that each round's importance-weighted term has the target's value as its conditional mean
given the past (the logged propensities are exact). Confidence sequences built on that
martingale structure (Waudby-Smith, Wu, Ramdas, Karampatziakis, Mineiro 2022) are valid at
every time and therefore at the end of the log; see :mod:`allocator.kernels.confseq`.

Rewards are scaled to [0, 1] by the reward range. The DR terms ``q̂π + w·(r − q̂(a))`` use
a reward model fitted on earlier rounds only (refitted at doubling block boundaries), so
they keep the martingale structure; IPS is the same with ``q̂ = 0``. The lower end bets on
``terms − ℓ >= 0``, the upper end on ``u − terms >= 0``, where ``[ℓ, u]`` holds every term
whatever the round's action and reward: it comes from the largest possible weight of each
round, computed from the logged candidate distributions (or, when the log lacks them,
from the largest logged weight). Betting on ``u − w·r`` rather than on ``w·(1 − r)``
keeps the noise of the weights themselves out of the upper end, which matters when
rewards are rare.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from allocator.kernels import confseq as kcs
from allocator.kernels import ope as kope
from allocator.replay.dataset import F64, I64, LoggedData
from allocator.replay.reward_model import RewardModel

#: rounds served by the constant prior before the first past-only reward-model fit
FIRST_BLOCK = 64
#: largest term bound the betting bounds resolve to ~2^-12 of the reward range
MAX_SHIFT = 2.0**40


class AnytimeEstimate(NamedTuple):
    """A point estimate and the confidence sequence's interval at the end of the log."""

    value: float
    low: float
    high: float


def block_starts(n: int, first: int = FIRST_BLOCK) -> list[int]:
    """0, first, 2·first, 4·first, … below n: the rows where the past-only model is refitted."""
    starts = [0]
    s = first
    while s < n:
        starts.append(s)
        s *= 2
    return starts


class PastOnlyValues:
    """q̂ of the candidates of any run of rounds of ``data``, each round's from a model
    fitted on earlier rounds only: rounds before the first refit get ``prior``, block
    ``[s_j, s_{j+1})`` the model fitted on rounds ``[0, s_j)``. Deterministic (no folds,
    no randomness); asked in increasing order of rounds, each block's model is fitted once,
    and a run's values are those of the whole log's at its candidates."""

    def __init__(self, data: LoggedData, model: RewardModel, prior: float) -> None:
        self.data, self.model, self.prior = data, model, prior
        self.starts = [*block_starts(data.n_rounds), data.n_rounds]
        self.fitted: tuple[int, RewardModel] | None = None

    def _model(self, start: int) -> RewardModel:
        if self.fitted is None or self.fitted[0] != start:
            self.fitted = (start, self.model.unfitted().fit(self.data.take(0, start)))
        return self.fitted[1]

    def rounds(self, lo: int, hi: int) -> F64:
        """Values of the candidates of rounds ``lo:hi`` (their nnz,)."""
        ptr, k = self.data.cand_ptr, self.data.n_arms

        def at(i: int) -> int:  # offset of round i's candidates (all k arms when unlogged)
            return i * k if ptr is None else int(ptr[i])

        out = np.empty(at(hi) - at(lo))
        for a, b in itertools.pairwise(self.starts):
            a0, b0 = max(a, lo), min(b, hi)
            if a0 >= b0:
                continue
            seg = slice(at(a0) - at(lo), at(b0) - at(lo))
            if a == 0:
                out[seg] = self.prior
            else:
                out[seg] = self._model(a).predict_candidates(self.data.take(a0, b0))
        return out


def _bets(x: F64, alpha: float, prior_mean: float) -> F64:
    bets = np.empty(x.shape[0])
    kcs.plug_in_bets(x, alpha, prior_mean, 0.25, bets)
    return bets


def _mean_interval(
    low_terms: F64, high_terms: F64, shift_low: float, shift_high: float, alpha: float
) -> tuple[float, float]:
    """CS for V from ``low_terms + shift_low >= 0`` (mean V + shift_low) and
    ``shift_high − high_terms >= 0`` (mean shift_high − V), each at level α/2, V in [0, 1]."""
    # Past MAX_SHIFT (weights of propensities near 0) the shifted unit interval is finer
    # than float64 can resolve and the bet's bound is rounding noise (it crossed the other
    # end): that end is the range's own, the trivially valid bound.
    lo, hi = 0.0, 1.0
    if shift_low <= MAX_SHIFT:
        x = np.ascontiguousarray(low_terms + shift_low)
        lo = kcs.lower_bound(x, _bets(x, alpha / 2, shift_low + 0.5), alpha / 2, shift_low,
                             shift_low + 1.0) - shift_low  # fmt: skip
    if shift_high <= MAX_SHIFT:
        y = np.ascontiguousarray(shift_high - high_terms)
        m = shift_high - 1.0
        hi = shift_high - kcs.lower_bound(y, _bets(y, alpha / 2, m + 0.5), alpha / 2, m, m + 1.0)
    return float(lo), float(hi)


def dr_sequence(terms: F64, low_bound: float, high_bound: float, alpha: float) -> AnytimeEstimate:
    """DR value and its confidence sequence from past-only DR ``terms`` (scaled units) that
    lie in ``[low_bound, high_bound]`` whatever the round's action and reward."""
    lo, hi = _mean_interval(terms, terms, max(0.0, -low_bound), max(1.0, high_bound), alpha)
    return AnytimeEstimate(float(np.mean(terms)), lo, hi)


class DriftingMean:
    """The weighted mean of terms (scaled units, in ``[low_bound, high_bound]``) and an
    interval for the weighted mean of their conditional means, which may drift (a learning
    target), fed in pieces: the empirical-Bernstein sequence over the terms mapped to
    [0, 1] by their bounds, bets scaled by the weights relative to their running maximum
    (predictable weights, known before their term). ``n_plan`` tunes the bets."""

    def __init__(self, low_bound: float, high_bound: float, alpha: float, n_plan: int) -> None:
        self.low, self.high = min(0.0, low_bound), max(1.0, high_bound)
        self.alpha, self.n_plan = alpha, float(max(n_plan, 1))
        self.state = kcs.eb_state()

    def feed(self, terms: F64, weights: F64) -> None:
        """The next terms and their weights, both (m,)."""
        kcs.eb_feed(
            np.ascontiguousarray(terms, dtype=np.float64),
            np.ascontiguousarray(weights, dtype=np.float64),
            self.low, self.high - self.low, self.alpha, self.n_plan, self.state,
        )  # fmt: skip

    def estimate(self) -> AnytimeEstimate:
        mean, centre, radius = kcs.eb_result(self.state, self.alpha)
        span = self.high - self.low
        lo = max(0.0, self.low + span * (centre - radius))
        hi = min(1.0, self.low + span * (centre + radius))
        return AnytimeEstimate(float(mean), lo, hi)


def drifting_mean_interval(
    terms: F64, low_bound: float, high_bound: float, alpha: float, weights: F64, n_plan: int
) -> AnytimeEstimate:
    """:class:`DriftingMean` of ``terms`` and ``weights`` fed at once."""
    sequence = DriftingMean(low_bound, high_bound, alpha, n_plan)
    sequence.feed(terms, weights)
    return sequence.estimate()


def dr_terms(
    ptr: I64, target: F64, q: F64, pos: I64, rewards01: F64, weights: F64,
    cand_prob: F64 | None, clip: float | None, w_max: float | None = None,
) -> tuple[F64, float, float]:  # fmt: skip
    """Per-round DR terms and the bounds they cannot leave (all in scaled units).

    The bounds use the importance weight each candidate would have had: target over
    logging probability (``cand_prob`` (nnz,)), or, when the log kept only the chosen
    arm's propensity, the largest logged weight for every candidate the target can
    choose (``w_max``: by default the largest of ``weights``; a chunk of a log passes the
    whole log's); capped at ``clip``.
    """
    terms = np.empty(ptr.shape[0] - 1)
    bounds = np.empty(2)
    logp = np.zeros(0) if cand_prob is None else np.asarray(cand_prob, dtype=np.float64)
    if w_max is None:
        w_max = float(weights.max(initial=0.0))
    kope.dr_round_terms(
        ptr, target, q, pos, rewards01, weights, logp, w_max,
        np.inf if clip is None else float(clip), terms, bounds,
    )  # fmt: skip
    return terms, float(bounds[0]), float(bounds[1])
