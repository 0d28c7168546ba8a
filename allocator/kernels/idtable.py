"""An open-addressing hash table of arm ids stored as flat codepoint arrays.

Ids live end to end in ``chars`` (``uint8`` while every codepoint is below 256, else
``uint32``) with ``offsets`` (n+1,) marking where each begins; ``table`` (a power of two,
at most half full) holds an entry per used slot and -1 elsewhere, probed linearly from
the id's FNV-1a hash over its codepoints. An entry is the arm index in its low 40 bits
and a 23-bit tag (the hash's top bits) above: a probe whose tag differs is passed over
without reading the id's offsets or codepoints, so a lookup costs one cache miss in the
table, then the id's offsets and codepoints once, to confirm the match. Queries come in
three forms, each read in place: ids joined by NUL (a list of str joined and encoded
once), the rows of a numpy string array viewed as ``uint32`` codepoints (trailing zeros
are padding), and int64 values standing for their decimal spelling. Lookups report the
first unknown or retired id by position, so the caller can raise exactly the error the
dict lookup used to.
"""

import numpy as np
from numba import njit

from allocator.kernels.prefetch import prefetch
from allocator.kernels.words import word

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


#: bits of an entry below its tag (arm indices are below 2**40)
_INDEX_BITS = 40
_INDEX_MASK = (1 << _INDEX_BITS) - 1
#: the tag is the hash's bits from here up (23 bits: an entry stays non-negative)
_TAG_SHIFT = np.uint64(41)


@njit(cache=True, nogil=True, inline="always")
def _tag(h):
    return np.int64(h >> _TAG_SHIFT)


@njit(cache=True, nogil=True)
def _same(chars, start, stop, q, lo, hi):
    """True when the id ``chars[start:stop]`` is ``q[lo:hi]``: compared as 8-byte words
    (the last one overlapping the one before) when both hold codepoints of one width and
    the id fills a word, else codepoint by codepoint."""
    n = hi - lo
    if stop - start != n:
        return False
    size = chars.itemsize
    nb = n * size
    if q.itemsize != size or nb < 8:
        k = 0
        while k < n and chars[start + k] == q[lo + k]:
            k += 1
        return k == n
    a = start * size
    b = lo * size
    k = 0
    while k < nb - 8:
        if word(chars, a + k) != word(q, b + k):
            return False
        k += 8
    return word(chars, a + nb - 8) == word(q, b + nb - 8)


@njit(cache=True, nogil=True)
def _find_from(table, chars, offsets, tag, q, lo, hi, slot):
    """Index of the id ``q[lo:hi]`` (hash tag ``tag``) probing from ``slot`` on, or -1."""
    mask = table.shape[0] - 1
    while True:
        e = table[slot]
        if e < 0:
            return -1
        if e >> _INDEX_BITS == tag:
            idx = e & _INDEX_MASK
            if _same(chars, offsets[idx], offsets[idx + 1], q, lo, hi):
                return idx
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def _find(table, chars, offsets, h, q, lo, hi):
    """Index of the id ``q[lo:hi]`` with hash ``h``, or -1."""
    slot = np.int64(h & np.uint64(table.shape[0] - 1))
    return _find_from(table, chars, offsets, _tag(h), q, lo, hi, slot)


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
        table[slot] = idx | (_tag(h) << _INDEX_BITS)
    return -1


#: ids a stage of :func:`_lookup_spans` covers: enough to overlap many cache misses, few
#: enough that its scratch stays in the L1 cache on a batch of 10^5 ids
BLOCK = 256


#: lookup modes: active ids only; retired ids too; unknown ids too (their index is -1)
ACTIVE = 0
ANY = 1
ANY_OR_NEW = 2


@njit(cache=True, nogil=True)
def _hashes(table, q, lo, hi):
    """Each span's hash; the home slots of the first :data:`BLOCK` are prefetched as
    their hashes are known (see :func:`lookup_joined`)."""
    hs = np.empty(lo.shape[0], dtype=np.uint64)
    mask = np.uint64(table.shape[0] - 1)
    for i in range(lo.shape[0]):
        hs[i] = _hash(q, lo[i], hi[i])
        if i < BLOCK:
            prefetch(table, np.int64(hs[i] & mask))
    return hs


@njit(cache=True, nogil=True)
def _lookup_spans(table, chars, offsets, active, mode, q, lo, hi, hs, out):
    """Resolve the ids ``q[lo[i]:hi[i]]`` (hashes ``hs``) into ``out``, :data:`BLOCK` ids
    at a time in stages (each id's home entry; the probe to its tag; that arm's offsets
    and flag; its first codepoint; the comparison). The loads of a stage do not depend on
    each other and the stages that miss the cache have no branch, so the misses of
    different ids overlap instead of queueing one id at a time; the next block's home
    slots are prefetched first, so they arrive while this block's offsets and codepoints
    are awaited (at 10^6 ids and distinct candidate lists: ~0.75x the time per id).
    Returns (status, position) of the first failing id, or (FOUND, -1)."""
    n = out.shape[0]
    mask = table.shape[0] - 1
    at = np.empty(BLOCK, dtype=np.int64)
    start = np.empty(BLOCK, dtype=np.int64)
    live = np.empty(BLOCK, dtype=np.bool_)
    first = np.empty(BLOCK, dtype=chars.dtype)
    for b in range(0, n, BLOCK):
        m = min(BLOCK, n - b)
        for i in range(b + BLOCK, min(b + 2 * BLOCK, n)):
            prefetch(table, np.int64(hs[i] & np.uint64(mask)))
        for j in range(m):
            at[j] = np.int64(hs[b + j] & np.uint64(mask))
            out[b + j] = table[at[j]]
        for j in range(m):  # on cached entries: the probe on to the first matching tag
            tag = _tag(hs[b + j])
            s = at[j]
            e = out[b + j]
            while e >= 0 and e >> _INDEX_BITS != tag:
                s = (s + 1) & mask
                e = table[s]
            at[j] = s
            out[b + j] = e & _INDEX_MASK if e >= 0 else -1
        for j in range(m):
            idx = max(out[b + j], 0)
            start[j] = offsets[idx]
            live[j] = active[idx]
        for j in range(m):
            first[j] = chars[start[j]]
        for j in range(m):
            i = b + j
            idx = out[i]
            if idx >= 0 and not (
                hi[i] > lo[i] and first[j] == q[lo[i]]
                and _same(chars, start[j], offsets[idx + 1], q, lo[i], hi[i])
            ):  # fmt: skip
                # a tag collision (one in 2**23 probes): probe on from the next slot
                tag = _tag(hs[i])
                idx = _find_from(table, chars, offsets, tag, q, lo[i], hi[i], (at[j] + 1) & mask)
                live[j] = active[idx] if idx >= 0 else False
            if idx < 0 and mode != ANY_OR_NEW:
                return UNKNOWN, i
            if mode == ACTIVE and not live[j]:
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
    hs = np.empty(n, dtype=np.uint64)
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
            hs[i] = h
            if i < BLOCK:  # the home slot requested while the next ids are hashed
                prefetch(table, np.int64(h & mask))
            h = _FNV_OFFSET
            i += 1
            start = k + 1
        else:
            h = _mix(h, q[k])
    if i != n:
        return MISSPLIT, 0
    return _lookup_spans(table, chars, offsets, active, mode, q, lo, hi, hs, out)


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
    return _lookup_spans(
        table, chars, offsets, active, mode, flat, lo, hi, _hashes(table, flat, lo, hi), out
    )


@njit(cache=True, nogil=True)
def lookup_ints(table, chars, offsets, active, mode, values, out):
    """Indices of the ids spelled by ``values`` int64 (n,) in decimal (``str(v)``), spelled
    and looked up :data:`BLOCK` at a time. Returns (status, position) as
    :func:`lookup_joined`."""
    n = values.shape[0]
    digits = np.empty(BLOCK * _INT_DIGITS, dtype=np.uint32)
    lo = np.empty(BLOCK, dtype=np.int64)
    hi = np.empty(BLOCK, dtype=np.int64)
    for b in range(0, n, BLOCK):
        m = min(BLOCK, n - b)
        for j in range(m):
            v = values[b + j]
            # the magnitude as uint64 (-(v + 1) + 1 keeps int64's minimum in range)
            mag = np.uint64(-(v + 1)) + np.uint64(1) if v < 0 else np.uint64(v)
            end = (j + 1) * _INT_DIGITS
            k = end
            while True:
                k -= 1
                digits[k] = np.uint32(48 + mag % np.uint64(10))
                mag //= np.uint64(10)
                if mag == 0:
                    break
            if v < 0:
                k -= 1
                digits[k] = np.uint32(45)
            lo[j] = k
            hi[j] = end
        hs = _hashes(table, digits, lo[:m], hi[:m])
        status, at = _lookup_spans(
            table, chars, offsets, active, mode, digits, lo[:m], hi[:m], hs, out[b : b + m]
        )
        if status != FOUND:
            return status, b + at
    return FOUND, -1


@njit(cache=True, nogil=True)
def pack_rows(q, chars, offsets):
    """Rows of ``q`` uint32 (n, w) (trailing zeros are padding) end to end into ``chars``,
    with ``offsets`` int64 (n+1,). Returns the first row that is empty or holds a zero
    inside or a value that is no Unicode scalar (a surrogate, which has no UTF-8 form, or
    past U+10FFFF), else -1."""
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
            c = row[k]
            if c == 0 or 0xD800 <= c <= 0xDFFF or c > 0x10FFFF:
                return i
            chars[pos] = c
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
