"""The acceptance walk of nonstationary replay (Dudík, Erhan, Langford, Li 2012).

Event ``k`` (target probability ``d_k`` of the logged action, logged propensity ``p_k``)
is accepted when ``u_k < c·d_k/p_k``. With a fixed ``c <= min_k p_k/d_k`` the accepted
events are distributed as the target's own online rounds; the adaptive rule of the paper
sets ``c`` after each acceptance to a low quantile of the ratios ``p/d`` seen so far
(capped at ``c_max``), accepting far more events at the price of a small bias on the few
whose ``c·d/p`` exceeds one. The quantile is read from a histogram of ``log2(p/d)`` with
:data:`BINS_PER_OCTAVE` bins per octave, rounded down (a slightly smaller ``c``).
"""

import numpy as np
from numba import njit

from allocator.kernels.constraints import advance_queues
from allocator.kernels.mixing import mix_constraints

#: histogram resolution of the ratios p/d (bin width 2^(1/16): 4.4%)
BINS_PER_OCTAVE = 16
#: log2 of the smallest and largest binned ratio (outside: the end bins)
LOG2_LOW = -40.0
LOG2_HIGH = 40.0
N_BINS = int((LOG2_HIGH - LOG2_LOW) * BINS_PER_OCTAVE)
#: slots of the walk's state vector: current c, ratios seen, accepted so far, lowest
#: occupied histogram bin (where the quantile's scan starts)
STATE_C, STATE_SEEN, STATE_ACCEPTED, STATE_LOWEST = 0, 1, 2, 3


def walk_state(c0: float) -> np.ndarray:
    """A fresh walk state (float64 (4,)) starting at ``c = c0``, nothing seen."""
    return np.array([c0, 0.0, 0.0, float(N_BINS)])


@njit(cache=True, nogil=True)
def _bin(ratio):
    if not ratio < np.inf:
        return N_BINS - 1
    b = int(np.floor((np.log2(ratio) - LOG2_LOW) * BINS_PER_OCTAVE))
    return min(max(b, 0), N_BINS - 1)


@njit(cache=True, nogil=True)
def _quantile(hist, seen, q, lowest):
    """Lower edge of the bin holding the ``q``-quantile of the binned ratios; the scan
    starts at the ``lowest`` occupied bin (the bins below add nothing but time: ~640 of
    them for ratios near one)."""
    need = max(1.0, np.ceil(q * seen))
    total = 0.0
    for b in range(lowest, N_BINS):
        total += hist[b]
        if total >= need:
            return 2.0 ** (LOG2_LOW + b / BINS_PER_OCTAVE)
    return 2.0**LOG2_HIGH


@njit(cache=True, nogil=True, inline="always")
def accept_event(d, p, u, adaptive, q, c_max, hist, state, c_out, k):
    """One event of the walk: record its ratio and ``c``, accept it, reset ``c`` after.

    Parameters
    ----------
    d, p, u : float, target probability of the logged action, its logged propensity, a
        uniform draw
    adaptive : bool, reset ``c`` to the ``q``-quantile of ``p/d`` after each acceptance
    q : float in (0, 1); c_max : float > 0, the cap on ``c``
    hist : float64 (N_BINS,), counts of ``log2(p/d)`` (updated)
    state : float64 (4,), ``c``, ratios seen, accepted so far, lowest occupied bin
        (updated; :func:`walk_state` makes a fresh one)
    c_out : float64 (m,), output, ``c_out[k]`` the ``c`` the event was walked with
    """
    ratio = p / d if d > 0.0 else np.inf
    b = _bin(ratio)
    hist[b] += 1.0
    if b < state[STATE_LOWEST]:
        state[STATE_LOWEST] = b
    state[STATE_SEEN] += 1.0
    c = state[STATE_C]
    c_out[k] = c
    ok = u * p < c * d
    if ok:
        state[STATE_ACCEPTED] += 1.0
        if adaptive:
            lowest = int(state[STATE_LOWEST])
            state[STATE_C] = min(c_max, _quantile(hist, state[STATE_SEEN], q, lowest))
    return ok


@njit(cache=True, nogil=True)
def contract_walk(
    base, ptr, idx, pos, times, codes, p, u, replay, adaptive, q, c_max, stop_after, hist,
    state, c_out, accepted, out, def_i, def_f, allowed, eta, backstop, surplus, arm_group,
    n_obs, first_seen, st_f, st_i, ring, member, before,
):  # fmt: skip
    """The contracts of a replayed policy on the logged timeline, event by event.

    Each event's policy probabilities go through the contracts with the queues as they
    stand (its final distribution lands in ``out``). With ``replay`` the event is walked as
    by :func:`accept_event` and an accepted event advances the queues with the logged
    action: the accepted events are the policy's own online rounds, so its queues move as
    they would have online. Without ``replay`` every event is scored and advances the
    queues by the distribution's expected service (a frozen target; nothing is accepted).

    Parameters
    ----------
    base : float64 (nnz,), the policy's (ε-mixed) probabilities of every candidate
    ptr : int64 (m+1,), idx : int64 (nnz,), CSR candidates of the m events
    pos : int64 (m,), flat position of each logged action; times : float64 (m,)
    codes : int64 (m, A), request attribute codes; p, u : float64 (m,), logged
        propensity and a uniform draw per event
    replay : bool; adaptive, q, c_max, hist, state : as :func:`accept_event`
    stop_after : int >= 1, acceptances after which the walk stops
    c_out : float64 (m,), output, the ``c`` each event was walked with; accepted : bool
        (m,), output (``replay`` False: both are left alone)
    out : float64 (nnz,), output, the final probabilities
    def_i ... before : the contract arguments of
        :func:`allocator.kernels.mixing.constrain_and_draw`

    Returns
    -------
    int
        Events consumed.
    """
    mu = np.zeros(before.shape[0])  # the cost of moving mass is not replay's concern
    taken = 0
    for k in range(ptr.shape[0] - 1):
        f0, f1 = ptr[k], ptr[k + 1]
        n = f1 - f0
        row = out[f0:f1]
        row[:] = base[f0:f1]
        mix_constraints(
            row, n, idx[f0:f1], mu, times[k], codes[k], def_i, def_f, allowed, eta, backstop,
            arm_group, n_obs, first_seen, st_f, st_i, member, before,
        )  # fmt: skip
        if not replay:
            advance_queues(row, n, 0, True, def_i, surplus, st_f, st_i, ring, member)
            continue
        local = pos[k] - f0
        accepted[k] = accept_event(
            row[local], p[k], u[k], adaptive, q, c_max, hist, state, c_out, k
        )
        if accepted[k]:
            advance_queues(row, n, local, False, def_i, surplus, st_f, st_i, ring, member)
            taken += 1
            if taken == stop_after:
                return k + 1
    return ptr.shape[0] - 1
