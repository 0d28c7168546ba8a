"""Floors and caps enforced by cyclic proportional projection, on membership classes.

A projection scales a target's members to its bound and every other candidate to the rest,
each side in proportion to its current probabilities (or evenly when it has no mass). Two
candidates in the same constraints (the same *class*) are always scaled by the same factor,
so the passes run on the few class masses (the partners, the cold and the warm merchants…)
instead of every candidate, and the candidates are rescaled once at the end. A class that
was spread evenly stays even under later scaling, so a class is fully described by its
mass and a flag. The result is the element-wise projection's, up to round-off.
"""

import numpy as np
from numba import njit

from allocator.kernels.constraints import (
    FLOOR,
    I_KIND,
    J_ACTIVE,
    J_N_MEMBERS,
    S_BALANCE,
    S_COST,
    S_MOVED,
    S_VALUE,
    TILT,
    TOL,
)

MAX_PASSES = 100

# rows of the per-class float scratch
C_COUNT, C_BASE, C_MASS, C_EVEN, C_RATE, C_SMU, C_MOVED = range(7)
N_CLASS_ROWS = 7


@njit(cache=True, nogil=True)
def _bounded(def_i, st_i):
    """Bitmask of the active floors and caps with at least one member in this request."""
    mask = 0
    for k in range(def_i.shape[0]):
        if st_i[k, J_ACTIVE] == 1 and def_i[k, I_KIND] != TILT and st_i[k, J_N_MEMBERS] > 0:
            mask |= 1 << k
    return mask


@njit(cache=True, nogil=True)
def _bound_gap(k, mass, def_i, st_f, eta):
    """Constraint ``k``'s bound on its members' ``mass`` and by how much it is violated."""
    r = st_f[k, S_VALUE]
    d = st_f[k, S_BALANCE]
    if def_i[k, I_KIND] == FLOOR:
        bound = min(1.0, max(0.0, r + eta * d))
        return bound, bound - mass
    bound = min(1.0, max(0.0, r - eta * d))
    return bound, mass - bound


@njit(cache=True, nogil=True)
def _violated(p, n, def_i, st_f, eta, member, bounded):
    """True when some ``bounded`` constraint's bound does not hold for ``p`` (most requests
    once the queues have settled: nothing to project)."""
    for k in range(def_i.shape[0]):
        if bounded & (1 << k):
            mass = 0.0
            for j in range(n):
                if member[k, j]:
                    mass += p[j]
            if _bound_gap(k, mass, def_i, st_f, eta)[1] > TOL:
                return True
    return False


@njit(cache=True, nogil=True)
def _classes(p, n, mu, n_con, bounded, member, cls, sig, cf):
    """Group candidates by the set of ``bounded`` constraints (a bitmask) they belong to.

    ``cls`` (n,) receives each candidate's class, ``sig`` (n,) each class's bitmask and
    ``cf`` (N_CLASS_ROWS, n) its count, mass, ``Σ μ`` and mean reward per unit of mass
    (``Σ p·μ / Σ p``: a class's ``Σ p·μ`` is its mass times this rate). Returns the class count.
    """
    nc = 0
    for j in range(n):
        s = 0
        for k in range(n_con):
            if member[k, j]:
                s |= 1 << k
        s &= bounded
        c = 0
        while c < nc and sig[c] != s:
            c += 1
        if c == nc:
            sig[c] = s
            for row in range(N_CLASS_ROWS):
                cf[row, c] = 0.0
            nc += 1
        cls[j] = c
        cf[C_COUNT, c] += 1.0
        cf[C_BASE, c] += p[j]
        cf[C_RATE, c] += p[j] * mu[j]
        cf[C_SMU, c] += mu[j]
    for c in range(nc):
        base = cf[C_BASE, c]
        cf[C_MASS, c] = base
        cf[C_RATE, c] = cf[C_RATE, c] / base if base > 0.0 else 0.0
    return nc


@njit(cache=True, nogil=True)
def _scale(k, bound, n, m, nc, sig, cf):
    """Members of ``k`` (``m`` of the ``n`` candidates) to mass ``bound``, the others to
    ``1 - bound``; returns the expected reward given up, ``Σ (p_before - p_after)·μ``."""
    if m == 0 or m == n:
        return 0.0
    bit = 1 << k
    mass = 0.0
    other = 0.0
    for c in range(nc):
        if sig[c] & bit:
            mass += cf[C_MASS, c]
        else:
            other += cf[C_MASS, c]
    lost = 0.0
    for c in range(nc):
        old = cf[C_MASS, c] * cf[C_RATE, c]
        inside = sig[c] & bit
        side = mass if inside else other
        share = bound if inside else 1.0 - bound
        if side > TOL:
            cf[C_MASS, c] *= share / side
        else:
            cf[C_MASS, c] = cf[C_COUNT, c] * share / (m if inside else n - m)
            cf[C_EVEN, c] = 1.0
            cf[C_RATE, c] = cf[C_SMU, c] / cf[C_COUNT, c]
        lost += old - cf[C_MASS, c] * cf[C_RATE, c]
    return lost


@njit(cache=True, nogil=True)
def project_bounds(p, n, mu, def_i, st_f, st_i, eta, member, before):
    """Bring every active floor and cap of one request within its bound, in place.

    Parameters
    ----------
    p : float64 (>= n,) probabilities in and out; mu : float64 (>= n,) mean reward
    def_i : int64 (K, N_DEF_I); st_f : float64 (K, N_STATE_F); st_i : int64 (K, N_STATE_I)
        as in :func:`allocator.kernels.mixing.mix_constraints` (``J_ACTIVE``,
        ``J_N_MEMBERS``, ``S_VALUE`` set for this request); ``S_COST`` and ``S_MOVED``
        grow by the reward given up and the mass moved on each constraint's members
    eta : float; member : bool (K, >= n); before : float64 (>= n,) holds ``p`` on entry
    """
    n_con = def_i.shape[0]
    bounded = _bounded(def_i, st_i)
    if not _violated(p, n, def_i, st_f, eta, member, bounded):
        return
    cls = np.empty(n, dtype=np.int64)
    sig = np.empty(n, dtype=np.int64)
    cf = np.empty((N_CLASS_ROWS, n))
    nc = _classes(p, n, mu, n_con, bounded, member, cls, sig, cf)
    for _ in range(MAX_PASSES):
        change = 0.0
        for k in range(n_con):
            bit = 1 << k
            if not bounded & bit:
                continue
            mass = 0.0
            for c in range(nc):
                if sig[c] & bit:
                    mass += cf[C_MASS, c]
            bound, gap = _bound_gap(k, mass, def_i, st_f, eta)
            if gap > TOL:
                st_f[k, S_COST] += _scale(k, bound, n, st_i[k, J_N_MEMBERS], nc, sig, cf)
                change = max(change, gap)
        if change <= TOL:
            break
    for c in range(nc):  # C_BASE becomes the factor of a proportional class
        base = cf[C_BASE, c]
        cf[C_BASE, c] = cf[C_MASS, c] / base if base > 0.0 else 0.0
    for j in range(n):
        c = cls[j]
        if cf[C_EVEN, c] > 0.0:
            p[j] = cf[C_MASS, c] / cf[C_COUNT, c]
        else:
            p[j] = before[j] * cf[C_BASE, c]
        cf[C_MOVED, c] += abs(p[j] - before[j])
    for k in range(n_con):
        bit = 1 << k
        for c in range(nc):
            if sig[c] & bit:
                st_f[k, S_MOVED] += cf[C_MOVED, c]
