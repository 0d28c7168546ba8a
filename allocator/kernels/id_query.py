"""The id lookup of a fused single decision, for either query form a request brings.

A fused kernel (ids resolved and decided in one compiled call) takes its candidates as ids
joined by NUL (a list of str, joined and encoded once: ``q`` 1-d) or as the rows of a numpy
string array (``q`` (n, w) ``uint32``, read in place). :func:`lookup_active` picks the
matching lookup of :mod:`.idtable` when the kernel is compiled for ``q``'s type, so each
family writes its fused kernel once for both forms (its compiled code, and numba's cache of
it, holds the lookup inlined).
"""

from numba import njit
from numba.extending import overload

from allocator.kernels.idtable import ACTIVE, FOUND, lookup_joined, lookup_rows


def lookup_active(table, chars, offsets, active, q, cand):
    """Resolve the active ids in ``q`` into ``cand`` (n,) int64: the (status, position) of
    :func:`.idtable.lookup_joined` (``q`` 1-d) or :func:`.idtable.lookup_rows` (``q``
    2-d). This body runs without the JIT; compiled callers get the overload below."""
    lookup = lookup_rows if q.ndim == 2 else lookup_joined
    return lookup(table, chars, offsets, active, ACTIVE, q, cand)


@overload(lookup_active)
def _lookup_active(table, chars, offsets, active, q, cand):
    if q.ndim == 2:
        return lambda table, chars, offsets, active, q, cand: lookup_rows(
            table, chars, offsets, active, ACTIVE, q, cand
        )
    return lambda table, chars, offsets, active, q, cand: lookup_joined(
        table, chars, offsets, active, ACTIVE, q, cand
    )


@njit(cache=True, nogil=True)
def found_all(table, chars, offsets, active, q, cand, err):
    """:func:`lookup_active`, reporting a failure as a fused kernel does: False with
    ``err`` (2,) int64 = (lookup status, position) of the first id not found or retired."""
    status, at = lookup_active(table, chars, offsets, active, q, cand)
    if status == FOUND:
        return True
    err[0] = status
    err[1] = at
    return False
