"""Candidate checks, exact choice probabilities and the final draw, shared by all models.

The probability vector ``p`` over a request's candidates is computed exactly for the
procedure that is implemented: Thompson sampling picks one of ``M`` bank rows uniformly
and takes the argmax of that row over the candidates (ties to the earliest candidate), so
``p_j = #rows won by j / M``; UCB and greedy put all mass on their argmax. An
``epsilon``-uniform share is then mixed in, and one uniform draws from ``p``. The logged
propensity is ``p[chosen]``.
"""

import numpy as np
from numba import njit

from allocator.kernels.random import next_uniform

OK = 0
ERR_EMPTY = -1
ERR_RANGE = -2
ERR_RETIRED = -3
ERR_DUPLICATE = -4
ERR_NONFINITE = -5
ERR_TOO_MANY = -6
#: a candidate id was not resolved (the id lookup's status and position are in ``err``)
ERR_LOOKUP = -7

RULE_THOMPSON = 0
RULE_UCB = 1
RULE_GREEDY = 2


@njit(cache=True, nogil=True)
def clear_marks(cand, n, pos_of_arm):
    """Reset ``pos_of_arm`` for the first ``n`` candidates (undo :func:`mark_candidates`)."""
    for j in range(n):
        pos_of_arm[cand[j]] = -1


@njit(cache=True, nogil=True, inline="always")
def mark_candidates(cand, active, pos_of_arm, err):
    """Check a candidate list and mark each arm's position in ``pos_of_arm``.

    Parameters
    ----------
    cand : int64 array, shape (C,)
        Arm indices of the request.
    active : bool array, shape (capacity,)
    pos_of_arm : int64 array, shape (capacity,)
        Scratch, all -1 on entry; on success holds ``j`` at ``cand[j]`` (caller clears it).
    err : int64 array, shape (1,)
        Receives the offending candidate position on failure.

    Returns
    -------
    int
        ``OK`` or a negative error code; on error no mark is left set.
    """
    n = cand.shape[0]
    if n == 0:
        return ERR_EMPTY
    cap = active.shape[0]
    for j in range(n):
        a = cand[j]
        code = OK
        if a < 0 or a >= cap:
            code = ERR_RANGE
        elif not active[a]:
            code = ERR_RETIRED
        elif pos_of_arm[a] >= 0:
            code = ERR_DUPLICATE
        if code != OK:
            err[0] = j
            clear_marks(cand, j, pos_of_arm)
            return code
        pos_of_arm[a] = j
    return OK


@njit(cache=True, nogil=True)
def all_finite(x):
    """True when no entry of the 1-d array ``x`` is NaN or infinite."""
    for i in range(x.shape[0]):  # noqa: SIM110 (a generator does not compile in numba)
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=True, nogil=True, inline="always")
def tally_wins(arg, m_rows, n, p):
    """Choice probabilities from bank-row winners: ``p[j]`` = the share of the ``m_rows``
    rows whose winner ``arg[m]`` is candidate ``j``, the exact propensity of Thompson
    sampling through the bank (the win-share kernels' common last step). Inlined at
    numba's level, so each caller compiles the same loop it had before the fold (a plain
    call measured up to 6 % slower in ``gauss_win_shares``).

    Parameters
    ----------
    arg : int64 array, shape (>= m_rows,)
        Winning candidate position of each bank row, each in ``[0, n)``.
    m_rows : int
    n : int
        Number of candidates.
    p : float64 array, shape (>= n,)
        Output; ``p[:n]`` is overwritten.
    """
    for j in range(n):
        p[j] = 0.0
    inv = 1.0 / m_rows
    for m in range(m_rows):
        p[arg[m]] += inv


@njit(cache=True, nogil=True)
def bank_win_shares(bank, cand, pos_of_arm, winner, best, arg, p):
    """Share of bank rows won by each candidate, for per-arm sample banks.

    Parameters
    ----------
    bank : float32 array, shape (capacity, M)
        Posterior samples, one row of ``M`` draws per arm.
    cand : int64 array, shape (C,)
    pos_of_arm : int64 array, shape (capacity,)
        Candidate positions marked by :func:`mark_candidates`.
    winner : int64 array, shape (M,)
        Argmax of each bank row over every allocated arm (a superset of any request).
    best, arg : float64 / int64 scratch, shape (>= M,)
    p : float64 array, shape (>= C,)
        Output: ``p[j]`` = fraction of rows whose argmax over ``cand`` is ``cand[j]``.
    """
    n = cand.shape[0]
    m_rows = winner.shape[0]
    fast = True
    for m in range(m_rows):
        if pos_of_arm[winner[m]] < 0:
            fast = False
            break
    if fast:
        for m in range(m_rows):
            arg[m] = pos_of_arm[winner[m]]
    else:
        a0 = cand[0]
        for m in range(m_rows):
            best[m] = bank[a0, m]
            arg[m] = 0
        for j in range(1, n):
            a = cand[j]
            for m in range(m_rows):
                v = bank[a, m]
                if v > best[m]:
                    best[m] = v
                    arg[m] = j
    tally_wins(arg, m_rows, n, p)


@njit(cache=True, nogil=True, inline="always")
def gauss_win_shares(mean, sd, z, n, best, arg, p):
    """Share of bank rows won by each candidate when scores are ``mean + sd * z``.

    The scores are formed and compared in single precision (``mean`` and ``sd`` rounded to
    float32 first): twice the SIMD width and half the memory traffic of doubles over the
    bank. The shares count the rows each candidate wins in exactly those float32 scores,
    so they are the exact probabilities of the procedure that runs.

    Parameters
    ----------
    mean, sd : float64 arrays, shape (>= n,)
        Per-candidate posterior mean and standard deviation of the score.
    z : float32 array, shape (slots, M), slots >= n
        Standard normals; candidate ``j`` of a request uses row ``j``.
    n : int
        Number of candidates.
    best, arg : float64 / int64 scratch, shape (>= M,) (used as float32 / int32)
    p : float64 array, shape (>= n,), output.
    """
    m_rows = z.shape[1]
    top = best.view(np.float32)
    who = arg.view(np.int32)  # 32-bit lanes beside the scores: the selects vectorise
    mu0 = np.float32(mean[0])
    s0 = np.float32(sd[0])
    for m in range(m_rows):
        top[m] = mu0 + s0 * z[0, m]
        who[m] = 0
    for j in range(1, n):
        mu = np.float32(mean[j])
        s = np.float32(sd[j])
        zj = z[j]
        jj = np.int32(j)
        for m in range(m_rows):
            v = mu + s * zj[m]
            wins = v > top[m]
            top[m] = v if wins else top[m]
            who[m] = jj if wins else who[m]
    tally_wins(who, m_rows, n, p)


@njit(cache=True, nogil=True)
def argmax_onehot(score, n, p):
    """Put all mass on the first maximiser of ``score[:n]``."""
    b = 0
    for j in range(1, n):
        if score[j] > score[b]:
            b = j
    for j in range(n):
        p[j] = 0.0
    p[b] = 1.0


@njit(cache=True, nogil=True)
def mix_uniform(p, n, eps):
    """Mix an ``eps`` uniform share into ``p[:n]`` in place."""
    if eps > 0.0:
        share = eps / n
        keep = 1.0 - eps
        for j in range(n):
            p[j] = keep * p[j] + share


@njit(cache=True, nogil=True)
def draw_index(p, n, rng_state):
    """Draw one position from ``p[:n]`` with the next uniform of the stream.

    The inverse-CDF walk falls back to the last position with positive mass when rounding
    leaves the cumulative sum a hair below ``u``.
    """
    u = next_uniform(rng_state)
    acc = 0.0
    last = 0
    for j in range(n):
        if p[j] > 0.0:
            last = j
            acc += p[j]
            if u < acc:
                return j
    return last
