"""Betting confidence sequences for the mean of non-negative terms (Waudby-Smith & Ramdas).

For terms ``x_i >= 0`` whose conditional means given the past are all ``m``, the wealth
``K_t(m) = Π_{i<=t} (1 + λ_i(m)(x_i − m))`` is a non-negative martingale when each bet
``λ_i(m) ∈ [0, 1/m)`` depends on the past only; by Ville's inequality it ever reaches
``1/α`` with probability at most ``α``. The lower end of the confidence sequence at time
``t`` is the smallest ``m`` whose wealth has not reached ``1/α`` by ``t`` (running
intersection). Bets are the predictable plug-in of Waudby-Smith & Ramdas (2023),
``sqrt(2 log(1/α) / (σ̂²_{i−1} · i · log(1 + i)))``, capped at ``c/m``. No bound on the
terms is needed, which is what importance-weighted rewards require (Waudby-Smith, Wu,
Ramdas, Karampatziakis, Mineiro 2022): the upper end comes from the same construction on
the mirrored terms.
"""

import numpy as np
from numba import njit

#: share of the largest allowed bet 1/m actually used: every factor stays >= 1 − BET_CAP
BET_CAP = 0.5
#: bisection steps on m: the bracket shrinks by 2^-60
BISECT_STEPS = 60


@njit(cache=True, nogil=True)
def plug_in_bets(x, alpha, prior_mean, prior_var, out):
    """Predictable bets ``out[i]`` from ``x[:i]`` only (not yet capped at ``c/m``).

    Parameters
    ----------
    x : float64 (n,); alpha : float in (0, 1)
    prior_mean, prior_var : float, the pseudo-observation that starts the running moments
    out : float64 (n,), output
    """
    s1 = prior_mean
    s2 = prior_var
    log_a = np.log(1.0 / alpha)
    for i in range(x.shape[0]):
        t = i + 1.0
        var = s2 / t
        out[i] = np.sqrt(2.0 * log_a / (max(var, 1e-12) * t * np.log(1.0 + t)))
        mean = s1 / t
        d = x[i] - mean
        # a term past 1e150 (a weight of a propensity near 0) would overflow the square:
        # the running variance is infinite either way, and the bets 0
        s2 = np.inf if abs(d) > 1e150 else s2 + d * d
        s1 += x[i]


@njit(cache=True, nogil=True)
def wealth_crosses(x, bets, m, log_threshold):
    """Whether ``max_t log K_t(m) >= log_threshold`` (m is rejected at some time)."""
    cap = BET_CAP / m if m > 0.0 else np.inf
    log_k = 0.0
    for i in range(x.shape[0]):
        lam = min(bets[i], cap)
        log_k += np.log1p(lam * (x[i] - m))
        if log_k >= log_threshold:
            return True
    return False


@njit(cache=True, nogil=True)
def lower_bound(x, bets, alpha, low, high):
    """Lower end of the level-``1 − alpha`` confidence sequence for the mean of ``x >= 0``
    after all ``n`` terms, searched in ``[low, high]`` (``low`` when nothing is rejected).

    Wealth falls as ``m`` rises (each factor does), so the rejected ``m`` form an interval
    ``[0, L)`` and bisection finds ``L``.
    """
    log_t = np.log(1.0 / alpha)
    if not wealth_crosses(x, bets, low, log_t):
        return low
    if wealth_crosses(x, bets, high, log_t):
        return high
    a, b = low, high
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (a + b)
        if wealth_crosses(x, bets, mid, log_t):
            a = mid
        else:
            b = mid
    return a


#: largest bet of the empirical-Bernstein sequence (Waudby-Smith & Ramdas use 1/2 or 3/4)
EB_CAP = 0.5


#: slots of :func:`eb_feed`'s running state
EB_S1, EB_S2, EB_NUM, EB_DEN, EB_PEN, EB_T, EB_WMAX, EB_WSUM, EB_TWSUM = range(9)


def eb_state():
    """A fresh state of :func:`eb_feed` (float64 (9,)): one pseudo-observation at 1/2
    with variance 1/4, nothing fed."""
    state = np.zeros(9)
    state[EB_S1], state[EB_S2] = 0.5, 0.25
    return state


@njit(cache=True, nogil=True)
def eb_feed(terms, weights, low, span, alpha, n_plan, state):
    """Feed the next terms to the predictable-plug-in empirical-Bernstein interval
    (Waudby-Smith & Ramdas 2023, Theorem 2) for terms whose conditional means ``μ_i`` may
    change with time: at level ``1 − alpha`` it covers ``Σ λ_i μ_i / Σ λ_i`` at every time.
    Terms are mapped to [0, 1] by ``(t − low) / span``; bets are tuned for ``n_plan``
    terms (nearly constant, so the covered mean is nearly the weighted one) and
    multiplied by ``min(1, w_i / max_{j<=i} w_j)`` (predictable weights). Fed in any
    number of pieces, the state is the same.

    Parameters
    ----------
    terms, weights : float64 (n,), the next terms (in [low, low + span]) and weights (> 0)
    low, span : float; alpha : float in (0, 1); n_plan : float >= 1
    state : float64 (9,), from :func:`eb_state` (updated)
    """
    log_a = np.log(2.0 / alpha)
    s1, s2, t = state[EB_S1], state[EB_S2], state[EB_T]
    num, den, pen, w_max = state[EB_NUM], state[EB_DEN], state[EB_PEN], state[EB_WMAX]
    w_sum, tw_sum = state[EB_WSUM], state[EB_TWSUM]
    for i in range(terms.shape[0]):
        x = (terms[i] - low) / span
        w = weights[i]
        w_max = max(w_max, w)
        t += 1.0
        mean, var = s1 / t, s2 / t
        lam = min(np.sqrt(2.0 * log_a / (max(var, 1e-12) * n_plan)), EB_CAP) * min(1.0, w / w_max)
        num += lam * x
        den += lam
        pen += (x - mean) ** 2 * (-np.log1p(-lam) - lam)
        s1 += x
        s2 += (x - s1 / (t + 1.0)) ** 2
        w_sum += w
        tw_sum += w * terms[i]
    state[EB_S1], state[EB_S2], state[EB_T] = s1, s2, t
    state[EB_NUM], state[EB_DEN], state[EB_PEN], state[EB_WMAX] = num, den, pen, w_max
    state[EB_WSUM], state[EB_TWSUM] = w_sum, tw_sum


def eb_result(state, alpha):
    """``(weighted mean of the terms, centre, radius)`` of the interval fed so far (mapped
    units for centre and radius)."""
    centre = state[EB_NUM] / state[EB_DEN]
    radius = (np.log(2.0 / alpha) + state[EB_PEN]) / state[EB_DEN]
    return state[EB_TWSUM] / state[EB_WSUM], centre, radius
