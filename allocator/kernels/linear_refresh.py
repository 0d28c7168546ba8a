"""The disjoint linear policy's refresh, compiled, for a replay walk that must not stop.

A walk over a disjoint linear (or logistic, without refits) policy folds every accepted
round in with the family's update kernel, and used to return to Python only for the
refresh every ``refresh_every`` updates: its posterior re-solve and its score-bank draws.
The policy's own refresh runs :func:`allocator.kernels.linear.refresh_linear` and
:func:`allocator.kernels.linear.roll_normals` (numba's ``Generator`` methods run numpy's
samplers on the same bit generator), so the same steps compiled into the walk give the
same posteriors, the same bank and the same stream position, and the walk runs to its end
in one call.
"""

from numba import njit

from allocator.kernels.linear import refresh_linear, roll_normals


@njit(cache=True, nogil=True)
def refresh_linear_walk(
    rng, n_arms, gamma, lam, clock, t_last, g, h, mu0, mu, a_inv, dirty, work, z, slots,
    cursor, idx, version, pending,
):  # fmt: skip
    """The disjoint linear policy's refresh, step for step, for a walk that must not stop
    for it: re-solve every dirty arm among the first ``n_arms``
    (:func:`allocator.kernels.linear.refresh_linear`), clear them, redraw the score
    bank's next window in its first ``slots`` rows from the policy's ``Generator`` ``rng``
    (:func:`allocator.kernels.linear.roll_normals`), then count the refresh (``pending``
    to 0, ``version`` + 1). ``idx`` int64 (>= n_arms,) scratch; the other arrays the
    policy state's (``cursor``: its ``z_cursor``)."""
    k = 0
    for a in range(n_arms):
        if dirty[a]:
            idx[k] = a
            k += 1
    refresh_linear(idx[:k], gamma, lam, clock, t_last, g, h, mu0, mu, a_inv, work)
    for j in range(k):
        dirty[idx[j]] = False
    roll_normals(rng, z, slots, pending[0], cursor)
    pending[0] = 0
    version[0] += 1
