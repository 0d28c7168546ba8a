"""Constraint mixing between the policy's probabilities and the final draw.

Per request: tilts multiply their target's probabilities; floors and caps become bounds on
their target's mass, ``lo = clip(r + η·D)`` and ``hi = clip(r - η·D')``. ``D`` is the
signed balance of unmet share, clamped below at ``-surplus`` so that a floor that was
over-served lowers its probability a little instead of being over-served for good (a queue
clipped at 0 forgives every surplus and serves a binding floor ~5 points above schedule).
The clipped virtual queue ``Q ← max(Q + r − served, 0)`` bounds every window
(``served ≥ Σr − Q_max``) and drives the backstop. Cyclic proportional projections move
mass until every bound holds (within-target shares follow the policy's own probabilities).
When a queue reaches the backstop ``B`` the draw is restricted to (or away from) that target and the
decision is flagged as forced. The draw uses the final vector, so its entry is the exact
propensity. Queues and per-window accounting advance on in-scope impressions only; an
impression that offered no choice for a constraint (no member for a floor, only members for
a cap) is skipped, or counted as unmet share when the constraint carries its debt.

Constraint arrays have one entry per constraint, in priority order (K,).
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import draw_index

FLOOR = 0
CAP = 1
TILT = 2

TARGET_GROUP = 0
TARGET_ARM = 1
TARGET_COLD = 2

SHAPE_CONSTANT = 0
SHAPE_LINEAR = 1
SHAPE_STEP = 2

# Columns of the packed tables (one row per constraint).
I_KIND, I_TARGET_KIND, I_TARGET_ID, I_N_MIN, I_SHAPE, I_STEPS, I_CARRY = range(7)
N_DEF_I = 7
F_MAX_AGE, F_T0, F_T1, F_V0, F_V1 = range(5)
N_DEF_F = 5
S_QUEUE, S_WIN_SERVED, S_WIN_TARGET, S_WORST, S_TOTAL_SERVED, S_TOTAL_TARGET = range(6)
S_COST, S_MOVED, S_VALUE, S_BALANCE = 6, 7, 8, 9
N_STATE_F = 10
J_RING_POS, J_N_SEEN, J_BACKSTOPS, J_N_MEMBERS, J_ACTIVE = range(5)
N_STATE_I = 5

_TOL = 1e-12
_MAX_PASSES = 100


@njit(cache=True, nogil=True)
def schedule_value(t, t0, t1, v0, v1, shape, steps):
    """Scheduled value at ``t`` inside ``[t0, t1)``: the one implementation of the formula."""
    frac = (t - t0) / (t1 - t0)
    if shape == SHAPE_CONSTANT:
        return v0
    if shape == SHAPE_LINEAR:
        return v0 + (v1 - v0) * frac
    k = int(frac * steps)
    if k > steps - 1:
        k = steps - 1
    return v0 + (v1 - v0) * k / max(steps - 1, 1)


@njit(cache=True, nogil=True)
def schedule_values(t, t0, t1, v0, v1, shape, steps, out):
    """:func:`schedule_value` for each entry of ``t`` (n,) into ``out`` (n,)."""
    for i in range(t.shape[0]):
        out[i] = schedule_value(t[i], t0, t1, v0, v1, shape, steps)


@njit(cache=True, nogil=True)
def _scale_target(p, n, member, k, bound, mu):
    """Move mass so the members of constraint ``k`` hold exactly ``bound`` of the total.

    Members scale to ``bound`` and the others to ``1 - bound`` (each side in proportion to
    its current probabilities, or evenly when it has none), so ``Σp`` stays 1 whatever the
    round-off of earlier passes. Returns the expected reward given up,
    ``Σ (p_before - p_after)·μ``.
    """
    mass = 0.0
    other = 0.0
    m = 0
    for j in range(n):
        if member[k, j]:
            mass += p[j]
            m += 1
        else:
            other += p[j]
    lost = 0.0
    if m == 0 or m == n:
        return lost
    for j in range(n):
        old = p[j]
        if member[k, j]:
            p[j] = old * bound / mass if mass > _TOL else bound / m
        else:
            p[j] = old * (1.0 - bound) / other if other > _TOL else (1.0 - bound) / (n - m)
        lost += (old - p[j]) * mu[j]
    return lost


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
        if st_f[k, S_MOVED] > _TOL:
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
        boost = st_f[k, S_VALUE]
        total = 0.0
        for j in range(n):
            total += p[j] * boost if member[k, j] else p[j]
        lost = 0.0
        for j in range(n):
            old = p[j]
            p[j] = (old * boost if member[k, j] else old) / total
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
        for _ in range(_MAX_PASSES):
            change = 0.0
            for k in range(n_con):
                kk = def_i[k, I_KIND]
                if st_i[k, J_ACTIVE] == 0 or kk == TILT or st_i[k, J_N_MEMBERS] == 0:
                    continue
                mass = 0.0
                for j in range(n):
                    if member[k, j]:
                        mass += p[j]
                r = st_f[k, S_VALUE]
                d = st_f[k, S_BALANCE]
                if kk == FLOOR:
                    bound = min(1.0, max(0.0, r + eta * d))
                    if mass < bound - _TOL:
                        st_f[k, S_COST] += _scale_target(p, n, member, k, bound, mu)
                        change = max(change, bound - mass)
                else:
                    bound = min(1.0, max(0.0, r - eta * d))
                    if mass > bound + _TOL:
                        st_f[k, S_COST] += _scale_target(p, n, member, k, bound, mu)
                        change = max(change, mass - bound)
            if change <= _TOL:
                break
        for k in range(n_con):
            if st_i[k, J_ACTIVE] == 1 and def_i[k, I_KIND] != TILT:
                for j in range(n):
                    if member[k, j]:
                        st_f[k, S_MOVED] += abs(p[j] - before[j])

    _normalise(p, n)
    return forced


@njit(cache=True, nogil=True)
def advance_queues(p, n, chosen, expected, def_i, surplus, st_f, st_i, ring, member):
    """Advance each active floor / cap by one impression after :func:`mix_constraints`.

    The impression served the target with the chosen position's membership or, with
    ``expected``, with the target's mass ``Σ p·member`` (the expected service of a
    distribution that is not drawn from: exact in expectation, used to replay a frozen
    constrained target on every logged round).
    """
    n_con = def_i.shape[0]
    window = ring.shape[2]
    for k in range(n_con):
        kk = def_i[k, I_KIND]
        if st_i[k, J_ACTIVE] == 0 or kk == TILT:
            continue
        m = st_i[k, J_N_MEMBERS]
        # A floor needs a member among the candidates, a cap a non-member: otherwise the
        # request offered no choice and only counts (as unmet share) when debts carry.
        eligible = m > 0 if kk == FLOOR else m < n
        if not eligible and def_i[k, I_CARRY] == 0:
            continue
        served = 0.0
        if m > 0 and expected:
            for j in range(n):
                if member[k, j]:
                    served += p[j]
        elif m > 0 and member[k, chosen]:
            served = 1.0
        r = st_f[k, S_VALUE]
        unmet = r - served if kk == FLOOR else served - r
        st_f[k, S_QUEUE] = max(st_f[k, S_QUEUE] + unmet, 0.0)
        st_f[k, S_BALANCE] = max(st_f[k, S_BALANCE] + unmet, -surplus)
        pos = st_i[k, J_RING_POS]
        if st_i[k, J_N_SEEN] >= window:
            st_f[k, S_WIN_SERVED] -= ring[0, k, pos]
            st_f[k, S_WIN_TARGET] -= ring[1, k, pos]
        ring[0, k, pos] = served
        ring[1, k, pos] = r
        st_f[k, S_WIN_SERVED] += served
        st_f[k, S_WIN_TARGET] += r
        st_i[k, J_RING_POS] = (pos + 1) % window
        st_i[k, J_N_SEEN] += 1
        st_f[k, S_TOTAL_SERVED] += served
        st_f[k, S_TOTAL_TARGET] += r
        if st_i[k, J_N_SEEN] >= window:
            gap = st_f[k, S_WIN_SERVED] - st_f[k, S_WIN_TARGET]
            slack = gap / window if kk == FLOOR else -gap / window
            if slack < st_f[k, S_WORST]:
                st_f[k, S_WORST] = slack
