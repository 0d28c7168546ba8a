"""Contracts as numbers: the packed tables, the schedules and the queues behind floors and caps.

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

Constraint arrays have one entry per constraint, in priority order (K,). The per-request
mix and draw are in :mod:`allocator.kernels.mixing`.
"""

from numba import njit

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

#: mass differences below this are round-off
TOL = 1e-12


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
