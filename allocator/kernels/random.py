"""Counter-based random numbers for the decision path.

A decision stream is two ``uint64`` words, ``[key, counter]``: the n-th uniform is a hash
of ``(key, n)``. The whole RNG state is therefore two integers that snapshot trivially,
decisions are reproducible from the seed, and there is no hidden global state (numba's
own ``np.random`` inside kernels is process-global, so it is not used).
"""

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_INV_2_53 = 1.0 / 9007199254740992.0


@njit(cache=True, nogil=True)
def mix64(x):
    """SplitMix64 finaliser of ``x + golden``: a bijective, well-mixed ``uint64`` hash."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def next_uniform(state):
    """Return the next uniform in [0, 1) of the stream and advance its counter.

    Parameters
    ----------
    state : uint64 array, shape (2,)
        ``[key, counter]``; ``counter`` is incremented in place.
    """
    c = state[1]
    state[1] = c + np.uint64(1)
    z = mix64(state[0] ^ mix64(c))
    return np.float64(z >> np.uint64(11)) * _INV_2_53
