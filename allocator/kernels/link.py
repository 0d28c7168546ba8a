"""Links from a Gaussian score posterior to an expected reward.

The Gaussian families score a candidate by ``x·θ ~ N(m, s²)``. For the linear models the
score is the expected reward; for the logistic ones it is a logit, whose expected reward
``E σ(x·θ)`` has no closed form: the probit approximation ``σ(m / √(1 + π s²/8))``
(MacKay 1992) is within 0.02 of it (we find 0.018 at worst, 0.005 while s² ≤ 1), and
exact at s = 0 and at m = 0.
"""

import numpy as np
from numba import njit

LINK_IDENTITY = 0
LINK_LOGIT = 1

_PI_OVER_8 = np.pi / 8.0


@njit(cache=True, nogil=True, fastmath=True)
def sigmoid(z):
    """``1 / (1 + e^{-z})`` without overflow for large ``|z|``."""
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(cache=True, nogil=True, fastmath=True)
def predictive_probability(m, s2):
    """Probit approximation of ``E σ(u)``, ``u ~ N(m, s2)``."""
    return sigmoid(m / np.sqrt(1.0 + _PI_OVER_8 * s2))


@njit(cache=True, nogil=True)
def apply_link(mean, sd, v, n, link):
    """Turn score means ``mean[:n]`` into expected rewards in place (identity: unchanged).

    ``sd[:n]`` are the score sds scaled by ``v`` (the exploration scale), which is divided
    out: the expected reward is that of the posterior itself.
    """
    if link == LINK_IDENTITY:
        return
    for j in range(n):
        s = sd[j] / v
        mean[j] = predictive_probability(mean[j], s * s)
