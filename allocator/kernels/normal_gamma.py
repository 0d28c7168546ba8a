"""Normal–Gamma sufficient statistics (weighted count, sum, sum of squares) per arm.

Forgetting is lazy as in :mod:`allocator.kernels.beta`: the three statistics decay by
``g`` per observation of the model and are brought up to date when the arm is touched.
"""

from numba import njit


@njit(cache=True, nogil=True)
def update_normal_gamma(arm, reward, gamma, clock, t_last, sn, sx, sxx, dirty):
    """Fold one real reward into ``arm``; advance ``clock[0]``."""
    t = clock[0] + 1
    clock[0] = t
    if gamma != 1.0:
        w = gamma ** (t - t_last[arm])
        sn[arm] *= w
        sx[arm] *= w
        sxx[arm] *= w
    sn[arm] += 1.0
    sx[arm] += reward
    sxx[arm] += reward * reward
    t_last[arm] = t
    dirty[arm] = True


@njit(cache=True, nogil=True)
def update_normal_gamma_batch(arms, rewards, gamma, clock, t_last, sn, sx, sxx, dirty):
    """Sequential :func:`update_normal_gamma` over ``arms`` (k,) and ``rewards`` (k,)."""
    for i in range(arms.shape[0]):
        update_normal_gamma(arms[i], rewards[i], gamma, clock, t_last, sn, sx, sxx, dirty)


@njit(cache=True, nogil=True)
def normal_gamma_posterior(
    idx, gamma, clock, t_last, sn, sx, sxx, m0, k0, al0, be0, mu, kappa, alpha, beta, mean, sd
):
    """Posterior ``(mu, kappa, alpha, beta)`` (k,) of arms ``idx``; mean and t-scale per arm.

    ``beta = b0 + (S2 - S1²/n)/2 + k0·n·(S1/n - m0)² / (2·kappa)`` — the textbook update
    written in the form that stays non-negative under rounding.
    """
    t = clock[0]
    for i in range(idx.shape[0]):
        a = idx[i]
        w = 1.0 if gamma == 1.0 else gamma ** (t - t_last[a])
        n = w * sn[a]
        s1 = w * sx[a]
        s2 = w * sxx[a]
        k = k0[a] + n
        m = (k0[a] * m0[a] + s1) / k
        al = al0[a] + 0.5 * n
        be = be0[a]
        if n > 0.0:
            xbar = s1 / n
            ss = s2 - s1 * xbar
            if ss < 0.0:
                ss = 0.0
            be += 0.5 * ss + k0[a] * n * (xbar - m0[a]) ** 2 / (2.0 * k)
        mu[i] = m
        kappa[i] = k
        alpha[i] = al
        beta[i] = be
        mean[a] = m
        sd[a] = (be / (al * k)) ** 0.5
