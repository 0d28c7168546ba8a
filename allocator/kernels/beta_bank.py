"""The Beta–Bernoulli policy's bank refresh, compiled, for a replay walk that must not stop.

A replay walk returns to Python at every refresh only because the bank is redrawn with the
policy's numpy ``Generator``; numba's ``Generator`` methods run the same samplers on the
same bit generator, so a compiled refresh draws exactly what the policy's own would, from
the same stream position. With at most :data:`MAX_ARMS` arms the policy draws one Gamma
per bank cell, all of ``X ~ Gamma(alpha)`` arm by arm, then all of ``Y ~ Gamma(beta)``,
and stores ``X / (X + Y)``; past that it may group arms by prior, and the walk leaves the
refresh to Python.
"""

from numba import njit

from allocator.kernels.beta import beta_posterior
from allocator.kernels.per_arm import CELL_BY_CELL_MAX, refresh_winners

#: the policy draws cell by cell up to this many arms (one constant, the policy's own)
MAX_ARMS = CELL_BY_CELL_MAX


@njit(cache=True, nogil=True)
def refresh_beta_bank(
    rng, n_arms, gamma, clock, t_last, s1, s0, a0, b0, dirty, bank, winner, mean, sd,
    pending, version, idx, alpha, beta, x,
):  # fmt: skip
    """Redraw the bank of every dirty arm, as the policy's refresh does, and count it.

    Parameters
    ----------
    rng : numpy Generator, the policy's bank generator (advanced)
    n_arms : int <= MAX_ARMS; gamma : float, forgetting; clock : int64 (1,)
    t_last : int64 (capacity,); s1, s0, a0, b0 : float64 (capacity,)
    dirty : bool (capacity,), cleared; bank : float32 (capacity, M); winner : int64 (M,)
    mean, sd : float64 (capacity,), updated for the redrawn arms
    pending, version : int64 (1,), set to 0 and incremented
    idx : int64 (>= n_arms,), alpha, beta : float64 (>= n_arms,), x : float64
        (>= n_arms, M), scratch
    """
    k = 0
    for a in range(n_arms):
        if dirty[a]:
            idx[k] = a
            k += 1
    pending[0] = 0
    version[0] += 1
    if k == 0:
        return
    arms = idx[:k]
    beta_posterior(arms, gamma, clock, t_last, s1, s0, a0, b0, alpha, beta, mean, sd)
    rows = bank.shape[1]
    for i in range(k):
        for m in range(rows):
            x[i, m] = rng.standard_gamma(alpha[i])
    for i in range(k):
        al, be = alpha[i], beta[i]
        for m in range(rows):
            total = x[i, m] + rng.standard_gamma(be)
            # both draws below the smallest float (tiny shapes only): the mean, as the policy
            bank[arms[i], m] = x[i, m] / total if total != 0.0 else al / (al + be)
    refresh_winners(bank, n_arms, arms, dirty, winner, False)
    for i in range(k):
        dirty[arms[i]] = False
