"""An open-addressing hash table of arm ids stored as flat codepoint arrays.

Ids live end to end in ``chars`` (``uint8`` while every codepoint is below 256, else
``uint32``) with ``offsets`` (n+1,) marking where each begins; ``table`` (a power of two,
at most half full) holds an arm index per used slot and -1 elsewhere, probed linearly
from the id's FNV-1a hash over its codepoints. Queries come in three forms, each read in
place: ids joined by NUL (a list of str joined and encoded once), the rows of a numpy
string array viewed as ``uint32`` codepoints (trailing zeros are padding), and int64
values standing for their decimal spelling. Lookups report the first unknown or retired
id by position, so the caller can raise exactly the error the dict lookup used to.
"""

import numpy as np
from numba import njit

#: lookup status codes (returned with the position they concern)
FOUND = 0
UNKNOWN = 1
RETIRED = 2
#: the joined query does not split into the expected number of ids (an id holds a NUL)
MISSPLIT = 3

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)
#: longest decimal spelling of an int64 ("-9223372036854775808")
_INT_DIGITS = 20


@njit(cache=True, nogil=True, inline="always")
def _mix(h, c):
    return (h ^ np.uint64(c)) * _FNV_PRIME


@njit(cache=True, nogil=True)
def _hash(q, lo, hi):
    h = _FNV_OFFSET
    for k in range(lo, hi):
        h = _mix(h, q[k])
    return h


@njit(cache=True, nogil=True)
def _find(table, chars, offsets, h, q, lo, hi):
    """Index of the id ``q[lo:hi]`` with hash ``h``, or -1."""
    mask = table.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    width = hi - lo
    while True:
        idx = table[slot]
        if idx < 0:
            return -1
        start = offsets[idx]
        if offsets[idx + 1] - start == width:
            k = 0
            while k < width and chars[start + k] == q[lo + k]:
                k += 1
            if k == width:
                return idx
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def insert(table, chars, offsets, start, stop):
    """Enter ids ``start..stop-1`` of ``chars``/``offsets`` into ``table``.

    Parameters
    ----------
    table : int64 (S,) power of two, with room for the ids at half load
    chars : uint8 or uint32 (>= offsets[stop],); offsets : int64 (>= stop+1,)

    Returns
    -------
    int
        -1, or the first index whose id is already in the table (that id is not entered).
    """
    mask = table.shape[0] - 1
    for idx in range(start, stop):
        lo, hi = offsets[idx], offsets[idx + 1]
        h = _hash(chars, lo, hi)
        if _find(table, chars, offsets, h, chars, lo, hi) >= 0:
            return idx
        slot = np.int64(h & np.uint64(mask))
        while table[slot] >= 0:
            slot = (slot + 1) & mask
        table[slot] = idx
    return -1


#: lookup modes: active ids only; retired ids too; unknown ids too (their index is -1)
ACTIVE = 0
ANY = 1
ANY_OR_NEW = 2


@njit(cache=True, nogil=True)
def _first_slots(table, q, lo, hi):
    """Each span's first probe slot in ``table`` (its hash masked)."""
    mask = np.uint64(table.shape[0] - 1)
    slot = np.empty(lo.shape[0], dtype=np.int64)
    for i in range(lo.shape[0]):
        slot[i] = np.int64(_hash(q, lo[i], hi[i]) & mask)
    return slot


@njit(cache=True, nogil=True)
def _lookup_spans(table, chars, offsets, active, mode, q, lo, hi, slot, out):
    """Resolve the ids ``q[lo[i]:hi[i]]`` (first probe slots ``slot``) into ``out``, in
    stages over all ids (the slot's entry, then its offsets, then its first codepoint, then
    the full comparison) so that the cache misses of different ids overlap instead of
    queueing one id at a time. Returns (status, position) of the first failing id, or
    (FOUND, -1)."""
    n = out.shape[0]
    mask = table.shape[0] - 1
    start = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = table[slot[i]]
    for i in range(n):
        start[i] = offsets[out[i]] if out[i] >= 0 else 0
    for i in range(n):  # first codepoints: the first probe's verdict in most cases
        if out[i] >= 0 and (hi[i] == lo[i] or chars[start[i]] != q[lo[i]]):
            start[i] = -1
    for i in range(n):
        s = slot[i]
        idx = out[i]
        first = start[i]
        width = hi[i] - lo[i]
        while idx >= 0:
            if first >= 0 and offsets[idx + 1] - first == width:
                k = 1
                while k < width and chars[first + k] == q[lo[i] + k]:
                    k += 1
                if k >= width:
                    break
            s = (s + 1) & mask
            idx = table[s]
            first = offsets[idx] if idx >= 0 else -1
            if first >= 0 and (width == 0 or chars[first] != q[lo[i]]):
                first = -1
        if idx < 0 and mode != ANY_OR_NEW:
            return UNKNOWN, i
        if mode == ACTIVE and not active[idx]:
            return RETIRED, i
        out[i] = idx
    return FOUND, -1


#: lists up to this long are resolved one id at a time (no scratch arrays): the staged
#: lookup pays off only when many ids' cache misses can overlap
SHORT = 16


@njit(cache=True, nogil=True)
def _lookup_joined_short(table, chars, offsets, active, mode, q, out):
    """:func:`lookup_joined` for a short list whose split was checked: each id hashed and
    probed in place as the scan reaches its end."""
    i = 0
    start = 0
    for k in range(q.shape[0] + 1):
        if k == q.shape[0] or q[k] == 0:
            idx = _find(table, chars, offsets, _hash(q, start, k), q, start, k)
            if idx < 0 and mode != ANY_OR_NEW:
                return UNKNOWN, i
            if mode == ACTIVE and not active[idx]:
                return RETIRED, i
            out[i] = idx
            i += 1
            start = k + 1
    return FOUND, -1


@njit(cache=True, nogil=True)
def lookup_joined(table, chars, offsets, active, mode, q, out):
    """Indices of the ``out.shape[0]`` ids in ``q``, joined by 0.

    Parameters
    ----------
    table, chars, offsets : the id table; active : bool (capacity,)
    mode : ACTIVE, ANY or ANY_OR_NEW (which ids are found); q : uint8 or uint32 (L,)
    out : int64 (n,) filled with the indices (-1: unknown, in mode ANY_OR_NEW)

    Returns
    -------
    (int, int)
        (status, position): FOUND with -1, or the first failing id's status and position;
        MISSPLIT (nothing looked up) when ``q`` does not split into exactly n ids.
    """
    n = out.shape[0]
    if n <= SHORT:
        seps = 0
        for k in range(q.shape[0]):
            seps += q[k] == 0
        if seps + 1 != n:
            return MISSPLIT, 0
        return _lookup_joined_short(table, chars, offsets, active, mode, q, out)
    lo = np.empty(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    slot = np.empty(n, dtype=np.int64)
    mask = np.uint64(table.shape[0] - 1)
    i = 0
    start = 0
    h = _FNV_OFFSET
    for k in range(q.shape[0] + 1):  # split and hash in one pass over the query
        if k == q.shape[0] or q[k] == 0:
            if i == n:
                return MISSPLIT, 0
            lo[i] = start
            hi[i] = k
            slot[i] = np.int64(h & mask)
            h = _FNV_OFFSET
            i += 1
            start = k + 1
        else:
            h = _mix(h, q[k])
    if i != n:
        return MISSPLIT, 0
    return _lookup_spans(table, chars, offsets, active, mode, q, lo, hi, slot, out)


@njit(cache=True, nogil=True)
def lookup_rows(table, chars, offsets, active, mode, q, out):
    """Indices of the ids in the rows of ``q`` uint32 (n, w) (a numpy ``<U{w}`` array's
    codepoints: trailing zeros are padding). Returns (status, position) as
    :func:`lookup_joined`."""
    n, w = q.shape
    lo = np.empty(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    flat = q.reshape(n * w)
    for i in range(n):
        end = (i + 1) * w
        while end > i * w and flat[end - 1] == 0:
            end -= 1
        lo[i] = i * w
        hi[i] = end
    slot = _first_slots(table, flat, lo, hi)
    return _lookup_spans(table, chars, offsets, active, mode, flat, lo, hi, slot, out)


@njit(cache=True, nogil=True)
def lookup_ints(table, chars, offsets, active, mode, values, out):
    """Indices of the ids spelled by ``values`` int64 (n,) in decimal (``str(v)``).
    Returns (status, position) as :func:`lookup_joined`."""
    n = values.shape[0]
    digits = np.empty(n * _INT_DIGITS, dtype=np.uint32)
    lo = np.empty(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    for i in range(n):
        v = values[i]
        # the magnitude as uint64 (-(v + 1) + 1 keeps int64's minimum in range)
        m = np.uint64(-(v + 1)) + np.uint64(1) if v < 0 else np.uint64(v)
        end = (i + 1) * _INT_DIGITS
        k = end
        while True:
            k -= 1
            digits[k] = np.uint32(48 + m % np.uint64(10))
            m //= np.uint64(10)
            if m == 0:
                break
        if v < 0:
            k -= 1
            digits[k] = np.uint32(45)
        lo[i] = k
        hi[i] = end
    slot = _first_slots(table, digits, lo, hi)
    return _lookup_spans(table, chars, offsets, active, mode, digits, lo, hi, slot, out)


@njit(cache=True, nogil=True)
def pack_rows(q, chars, offsets):
    """Rows of ``q`` uint32 (n, w) (trailing zeros are padding) end to end into ``chars``,
    with ``offsets`` int64 (n+1,). Returns the first row that is empty or holds a zero
    inside, else -1."""
    pos = 0
    offsets[0] = 0
    for i in range(q.shape[0]):
        row = q[i]
        hi = row.shape[0]
        while hi > 0 and row[hi - 1] == 0:
            hi -= 1
        if hi == 0:
            return i
        for k in range(hi):
            if row[k] == 0:
                return i
            chars[pos] = row[k]
            pos += 1
        offsets[i + 1] = pos
    return -1


@njit(cache=True, nogil=True)
def gather(chars, offsets, idx, out):
    """Ids ``idx`` int64 (n,) as rows of ``out`` uint32 (n, w), zero-padded (w >= the
    longest); viewed as ``<U{w}`` they are a numpy string array."""
    for i in range(idx.shape[0]):
        lo = offsets[idx[i]]
        n = offsets[idx[i] + 1] - lo
        for k in range(n):
            out[i, k] = chars[lo + k]
        for k in range(n, out.shape[1]):
            out[i, k] = 0


@njit(cache=True, nogil=True)
def longest(offsets, idx):
    """Length of the longest id among ``idx`` int64 (n,)."""
    w = 0
    for i in range(idx.shape[0]):
        w = max(w, offsets[idx[i] + 1] - offsets[idx[i]])
    return w
