"""The pending table's one-row lookup (see ``allocator.serving.pending``)."""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def find_row(counter, head, alive, lo, hi, key, code):
    """Row of the live decision with counter ``key`` and head code ``code``, or -1.

    Parameters
    ----------
    counter : int64 (rows,), increasing over ``lo..hi-1``; head : int32 (rows,)
    alive : bool (rows,); lo, hi : the live window; key, code : the decision's counter and head

    Returns
    -------
    int
        The row in ``lo..hi-1`` (binary search on ``counter``), or -1 when it is not pending.
    """
    a, b = lo, hi
    while a < b:
        m = (a + b) >> 1
        if counter[m] < key:
            a = m + 1
        else:
            b = m
    if a < hi and counter[a] == key and head[a] == code and alive[a]:
        return a
    return np.int64(-1)
