"""Sweeps of a constraint set's schedules over a time grid, for validation.

A schedule table has one row per constraint: ``sched_f`` (K, 4) = ``t0, t1, v0, v1`` and
``sched_i`` (K, 2) = ``shape, steps`` (the codes of :mod:`allocator.kernels.constraints`).
A constraint is live at ``t`` when ``t0 <= t < t1``. A ``classes`` row (M, K) marks the
constraints that apply together to one class of requests. Each sweep stops at the first
time (in grid order) where some class breaks its rule, so a config is refused at the
earliest time it fails.
"""

import numpy as np
from numba import njit

from allocator.kernels.constraints import schedule_value


@njit(cache=True, nogil=True)
def _live_value(sched_f, sched_i, c, t):
    """Value of constraint ``c`` at ``t``, or -1.0 when outside its window."""
    if not sched_f[c, 0] <= t < sched_f[c, 1]:
        return -1.0
    return schedule_value(
        t, sched_f[c, 0], sched_f[c, 1], sched_f[c, 2], sched_f[c, 3],
        sched_i[c, 0], sched_i[c, 1],
    )  # fmt: skip


@njit(cache=True, nogil=True)
def first_floor_excess(times, sched_f, sched_i, key, grouped, classes, n_keys, tol):
    """First (time, class) whose floors sum past ``1 + tol``.

    Per key (a group, or one arm) the floor is the largest group-wide floor or the sum of
    the narrower ones (arm and cold-arm floors), whichever is larger; keys add up.

    Parameters
    ----------
    times : float64 (T,) sorted; sched_f : float64 (K, 4); sched_i : int64 (K, 2)
    key : int64 (K,) in [0, n_keys); grouped : bool (K,) a group-wide floor
    classes : bool (M, K); tol : float

    Returns
    -------
    (int, int, float)
        Grid index, class index and the sum; (-1, -1, 0.0) when no class exceeds.
    """
    n_con = sched_f.shape[0]
    wide = np.zeros(n_keys)
    narrow = np.zeros(n_keys)
    for ti in range(times.shape[0]):
        t = times[ti]
        for m in range(classes.shape[0]):
            wide[:] = 0.0
            narrow[:] = 0.0
            for c in range(n_con):
                if not classes[m, c]:
                    continue
                v = _live_value(sched_f, sched_i, c, t)
                if v <= 0.0:
                    continue
                if grouped[c]:
                    wide[key[c]] = max(wide[key[c]], v)
                else:
                    narrow[key[c]] += v
            total = 0.0
            for g in range(n_keys):
                total += max(wide[g], narrow[g])
            if total > 1.0 + tol:
                return ti, m, total
    return -1, -1, 0.0


@njit(cache=True, nogil=True)
def first_cap_shortfall(times, sched_f, sched_i, key, classes, n_keys, tol):
    """First (time, class) where every key has a live cap and their tightest caps sum
    below ``1 - tol`` (no request made of those keys can be served within them).

    Parameters as :func:`first_floor_excess` (``key`` indexes the groups of the catalogue).

    Returns
    -------
    (int, int, float)
        Grid index, class index and the sum; (-1, -1, 0.0) when none falls short.
    """
    n_con = sched_f.shape[0]
    tight = np.empty(n_keys)
    for ti in range(times.shape[0]):
        t = times[ti]
        for m in range(classes.shape[0]):
            tight[:] = np.inf
            for c in range(n_con):
                if classes[m, c]:
                    v = _live_value(sched_f, sched_i, c, t)
                    if v >= 0.0:
                        tight[key[c]] = min(tight[key[c]], v)
            total = 0.0
            for g in range(n_keys):
                total += tight[g]
            if total < 1.0 - tol:
                return ti, m, total
    return -1, -1, 0.0


@njit(cache=True, nogil=True)
def first_below(times, sched_f, sched_i, low, high):
    """First grid index where constraint ``low`` is live and below ``high`` (0 when not
    live), or -1. ``times`` (T,) sorted; ``low``, ``high`` rows of the table."""
    for ti in range(times.shape[0]):
        t = times[ti]
        lo = _live_value(sched_f, sched_i, low, t)
        if lo >= 0.0 and lo < _live_value(sched_f, sched_i, high, t):
            return ti
    return -1
