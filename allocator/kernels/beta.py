"""Beta–Bernoulli sufficient statistics with lazy exponential forgetting.

Per arm we keep discounted success and failure weights ``s1, s0`` as of the arm's last
update ``t_last`` on the model clock (one tick per observation). The effective posterior at
clock ``t`` is ``Beta(a0 + g^(t - t_last) s1, b0 + g^(t - t_last) s0)``: every observation
decays by ``g`` per later observation of the model, toward the arm's prior, and untouched
arms cost nothing until they are read.
"""

from numba import njit


@njit(cache=True, nogil=True)
def update_beta(arm, reward, gamma, clock, t_last, s1, s0, dirty):
    """Fold one reward in [0, 1] into ``arm``; advance ``clock[0]``."""
    t = clock[0] + 1
    clock[0] = t
    if gamma != 1.0:
        w = gamma ** (t - t_last[arm])
        s1[arm] *= w
        s0[arm] *= w
    s1[arm] += reward
    s0[arm] += 1.0 - reward
    t_last[arm] = t
    dirty[arm] = True


@njit(cache=True, nogil=True)
def learn_beta_one(arm, reward, gamma, clock, t_last, s1, s0, dirty, n_obs, pending, every):
    """:func:`update_beta`, then count it: ``n_obs`` (capacity,) and ``pending`` (1,) int64.

    Returns
    -------
    bool
        True when ``every`` updates are pending (a refresh is due).
    """
    update_beta(arm, reward, gamma, clock, t_last, s1, s0, dirty)
    n_obs[arm] += 1
    pending[0] += 1
    return pending[0] >= every


@njit(cache=True, nogil=True)
def update_beta_batch(arms, rewards, gamma, clock, t_last, s1, s0, dirty):
    """Sequential :func:`update_beta` over ``arms`` (k,) and ``rewards`` (k,)."""
    for i in range(arms.shape[0]):
        update_beta(arms[i], rewards[i], gamma, clock, t_last, s1, s0, dirty)


@njit(cache=True, nogil=True)
def beta_posterior(idx, gamma, clock, t_last, s1, s0, a0, b0, alpha, beta, mean, sd):
    """Effective ``alpha, beta`` (k,) of arms ``idx`` at ``clock[0]``; also their mean and sd."""
    t = clock[0]
    for i in range(idx.shape[0]):
        a = idx[i]
        w = 1.0 if gamma == 1.0 else gamma ** (t - t_last[a])
        al = a0[a] + w * s1[a]
        be = b0[a] + w * s0[a]
        alpha[i] = al
        beta[i] = be
        tot = al + be
        mean[a] = al / tot
        sd[a] = (al * be / (tot * tot * (tot + 1.0))) ** 0.5
