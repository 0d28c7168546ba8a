"""One request's final distribution under the contracts, and the draw from it.

Tilts multiply their target's probabilities; a queue at the backstop restricts the draw to
(or away from) its target; otherwise every floor and cap is brought within its bound by
:func:`allocator.kernels.projection.project_bounds`. The draw uses the final vector, so its
entry is the exact propensity. The bounds, queues and tables are those of
:mod:`allocator.kernels.constraints`.
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import draw_index
from allocator.kernels.constraints import (
    F_MAX_AGE,
    F_T0,
    F_T1,
    F_V0,
    F_V1,
    FLOOR,
    I_KIND,
    I_N_MIN,
    I_SHAPE,
    I_STEPS,
    I_TARGET_ID,
    I_TARGET_KIND,
    J_ACTIVE,
    J_BACKSTOPS,
    J_N_MEMBERS,
    S_COST,
    S_MOVED,
    S_QUEUE,
    S_VALUE,
    TARGET_ARM,
    TARGET_GROUP,
    TILT,
    TOL,
    advance_queues,
    schedule_value,
)
from allocator.kernels.projection import project_bounds


@njit(cache=True, nogil=True)
def _normalise(p, n):
    """Make ``p[:n]`` sum to exactly 1 (uniform if it has no mass): the draw and the logged
    propensity then describe the same distribution."""
    total = 0.0
    for j in range(n):
        total += p[j]
    if total > 0.0:
        for j in range(n):
            p[j] /= total
    else:
        for j in range(n):
            p[j] = 1.0 / n


@njit(cache=True, nogil=True)
def _restrict(p, n, member, k, inside, mu):
    """Keep only members (``inside``) or only non-members of ``k``, renormalised."""
    total = 0.0
    for j in range(n):
        if member[k, j] == inside:
            total += p[j]
    lost = 0.0
    count = 0
    for j in range(n):
        if member[k, j] == inside:
            count += 1
    for j in range(n):
        old = p[j]
        if member[k, j] == inside:
            p[j] = old / total if total > 0.0 else 1.0 / count
        else:
            p[j] = 0.0
        lost += (old - p[j]) * mu[j]
    return lost


@njit(cache=True, nogil=True)
def constrain_and_draw(
    p, n, cand, mu, t, req_codes, def_i, def_f, allowed, eta, backstop, surplus,
    arm_group, n_obs, first_seen, st_f, st_i, ring, member, before, rng_state,
):  # fmt: skip
    """Apply every active constraint to ``p[:n]`` in place, draw, and account.

    :func:`mix_constraints`, one draw from the final vector, then :func:`advance_queues`
    with the chosen candidate's membership.

    Parameters
    ----------
    p : float64 (>= n,) policy probabilities in, final probabilities out
    cand : int64 (n,) arm indices; mu : float64 (n,) posterior mean reward per candidate
    t : float epoch seconds; req_codes : int64 (A,) request attribute value codes
    def_i : int64 (K, N_DEF_I); def_f : float64 (K, N_DEF_F) definitions (``I_*``, ``F_*``)
    allowed : bool (K, A, V) scope table; eta, backstop, surplus : float
    arm_group, n_obs : int64 (capacity,); first_seen : float64 (capacity,), NaN = never seen
    st_f : float64 (K, N_STATE_F); st_i : int64 (K, N_STATE_I) state (``S_*``, ``J_*``);
    ``S_MOVED`` and ``S_VALUE`` describe this decision only
    ring : float64 (2, K, W) served indicator and scheduled share of the last W impressions
    member : bool (K, >= n) and before : float64 (>= n,) scratch
    rng_state : uint64 (2,) decision stream

    Returns
    -------
    (int, int, int)
        Chosen position, the index of the forcing constraint (-1 if not forced), and a
        bitmask of the constraints that moved probability mass for this decision.
    """
    forced = mix_constraints(
        p, n, cand, mu, t, req_codes, def_i, def_f, allowed, eta, backstop, arm_group, n_obs,
        first_seen, st_f, st_i, member, before,
    )  # fmt: skip
    chosen = draw_index(p, n, rng_state)
    adjusted = 0
    for k in range(def_i.shape[0]):
        if st_f[k, S_MOVED] > TOL:
            adjusted |= 1 << k
    advance_queues(p, n, chosen, False, def_i, surplus, st_f, st_i, ring, member)
    return chosen, forced, adjusted


@njit(cache=True, nogil=True)
def mix_constraints(
    p, n, cand, mu, t, req_codes, def_i, def_f, allowed, eta, backstop, arm_group, n_obs,
    first_seen, st_f, st_i, member, before,
):  # fmt: skip
    """The final distribution of one request: tilts, then the backstop or the bounds of
    floors and caps, normalised, in ``p[:n]``. Queues are read, not advanced (only the
    per-decision slots, the cost and backstop counts and first-seen times change), so
    the same state can be mixed for several requests, as replay does. Arguments as
    :func:`constrain_and_draw`; returns the forcing constraint (-1 if none).
    """
    n_con = def_i.shape[0]
    n_attr = req_codes.shape[0]
    for j in range(n):
        a = cand[j]
        if np.isnan(first_seen[a]):
            first_seen[a] = t
    for k in range(n_con):
        st_f[k, S_MOVED] = 0.0
        ok = def_f[k, F_T0] <= t < def_f[k, F_T1]
        for i in range(n_attr):
            if ok and not allowed[k, i, req_codes[i]]:
                ok = False
        st_i[k, J_ACTIVE] = 1 if ok else 0
        st_i[k, J_N_MEMBERS] = 0
        if not ok:
            continue
        st_f[k, S_VALUE] = schedule_value(
            t, def_f[k, F_T0], def_f[k, F_T1], def_f[k, F_V0], def_f[k, F_V1],
            def_i[k, I_SHAPE], def_i[k, I_STEPS],
        )  # fmt: skip
        tk = def_i[k, I_TARGET_KIND]
        tid = def_i[k, I_TARGET_ID]
        count = 0
        for j in range(n):
            a = cand[j]
            if tk == TARGET_GROUP:
                is_member = arm_group[a] == tid
            elif tk == TARGET_ARM:
                is_member = a == tid
            else:
                is_member = (
                    arm_group[a] == tid
                    and n_obs[a] < def_i[k, I_N_MIN]
                    and t - first_seen[a] <= def_f[k, F_MAX_AGE]
                )
            member[k, j] = is_member
            if is_member:
                count += 1
        st_i[k, J_N_MEMBERS] = count

    # Tilts reshape the base distribution before any bound is enforced.
    for k in range(n_con):
        if st_i[k, J_ACTIVE] == 0 or def_i[k, I_KIND] != TILT or st_i[k, J_N_MEMBERS] == 0:
            continue
        # Members weigh `boost`, others 1. Should that total overflow (a huge tilt), the
        # same ratios as members 1 and others 1/boost; the usual case keeps its bits. A
        # tilt that leaves no mass (0, or one that underflows, on every candidate holding
        # probability) cannot be normalised: the request stays untilted.
        boost = st_f[k, S_VALUE]
        w_in, w_out = boost, 1.0
        total = 0.0
        for j in range(n):
            total += p[j] * w_in if member[k, j] else p[j]
        if total == np.inf:
            w_in, w_out = 1.0, 1.0 / boost
            total = 0.0
            for j in range(n):
                total += p[j] * (w_in if member[k, j] else w_out)
        if not total > 0.0:
            continue
        lost = 0.0
        for j in range(n):
            old = p[j]
            p[j] = (old * w_in if member[k, j] else old * w_out) / total
            lost += (old - p[j]) * mu[j]
            st_f[k, S_MOVED] += abs(old - p[j])
        st_f[k, S_COST] += lost

    # Backstop: the longest queue at or past B forces the decision.
    forced = -1
    longest = 0.0
    for k in range(n_con):
        m = st_i[k, J_N_MEMBERS]
        if st_i[k, J_ACTIVE] == 0 or def_i[k, I_KIND] == TILT or m == 0 or m == n:
            continue
        q = st_f[k, S_QUEUE]
        if q >= backstop and q > longest:
            longest = q
            forced = k
    for j in range(n):
        before[j] = p[j]
    if forced >= 0:
        st_f[forced, S_COST] += _restrict(p, n, member, forced, def_i[forced, I_KIND] == FLOOR, mu)
        st_i[forced, J_BACKSTOPS] += 1
        for j in range(n):
            st_f[forced, S_MOVED] += abs(before[j] - p[j])
    else:
        project_bounds(p, n, mu, def_i, st_f, st_i, eta, member, before)

    _normalise(p, n)
    return forced
