"""A batch's candidate lists resolved to CSR arm indices by one compiled call per batch.

A batch's requests give their candidates in one form almost always: lists of str (the
serving layer's merchant ids), numpy string arrays, :class:`IntIds` or int64 index arrays.
Looked up request by request, a list of 200 ids costs more in Python (the call, the join,
the encode) than in the lookup; here the whole batch is joined (or concatenated) once and
resolved by one call of the id table (:mod:`allocator.kernels.idtable`). A failed lookup
is raised for the request and position it concerns, exactly as the request-by-request
lookup raises it (that path stops at the first failing request, and the batch's lookup
reports the first failing id in request order). Mixed forms, and whatever a whole-batch
form cannot carry (a non-str in a list, an id holding a NUL, a codepoint no arm id has, an
empty list), return None: the caller resolves those request by request.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

from allocator.kernels import idtable as kid
from allocator.registry import ArmRegistry, IntIds, codepoint_rows

_INDEX = frozenset({np.dtype(np.int64)})
_dtype = attrgetter("dtype")
_ndim = attrgetter("ndim")


def resolve_batch(
    registry: ArmRegistry, given: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(ptr, idx)``: CSR offsets (R+1,) and the arm indices of the requests' candidate
    lists ``given`` when they share one whole-batch form; None when they do not (nothing
    looked up). Raises :class:`~allocator.errors.UnknownArmError` for an unknown or
    retired id as :meth:`ArmRegistry.lookup` of that request would. Index arrays are
    passed through: range, activity and duplicates are the decide kernel's checks."""
    if not given:
        return None
    kinds = set(map(type, given))
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    arrays = kind is np.ndarray and set(map(_ndim, given)) == {1}
    if not (arrays or kind is list or kind is tuple or kind is IntIds):
        return None  # scalars, 0-d or 2-d arrays...: refused one by one
    lens = np.fromiter(map(len, given), np.int64, len(given))
    ptr = np.zeros(lens.shape[0] + 1, dtype=np.int64)
    np.cumsum(lens, out=ptr[1:])
    if arrays and set(map(_dtype, given)) == _INDEX:
        return ptr, np.concatenate(given)
    if not lens.all():  # an empty request: refused by the kernel, after every lookup
        return None
    if kind is list or kind is tuple:
        return _joined(registry, given, ptr)
    if kind is IntIds:
        values = np.concatenate([c.values for c in given])
        return _looked_up(registry, kid.lookup_ints, values, ptr, given)
    if arrays and {t.kind for t in set(map(_dtype, given))} == {"U"}:
        rows = codepoint_rows(np.concatenate(given))
        return _looked_up(registry, kid.lookup_rows, rows, ptr, given)
    return None


def _joined(
    registry: ArmRegistry, given: Sequence[Any], ptr: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Lists of str joined by NUL (each list, then the lists: both at C speed) and
    encoded once as the id table's codepoints."""
    try:
        per_request = list(map("\x00".join, given))
    except TypeError:  # a non-str: the one-by-one lookup names it
        return None
    q = registry.joined_ids(per_request)
    if q is None:
        return None
    return _looked_up(registry, kid.lookup_joined, q, ptr, given)


def _looked_up(
    registry: ArmRegistry, kernel: Any, q: np.ndarray, ptr: np.ndarray, given: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``kernel`` (a lookup of :mod:`allocator.kernels.idtable`) over the whole batch's
    query ``q``; the first failing id raised for its request and position."""
    idx = np.empty(int(ptr[-1]), dtype=np.int64)
    code, at = kernel(*registry.id_table(), registry.active, kid.ACTIVE, q, idx)
    if code == kid.MISSPLIT:  # an id holds a NUL: the one-by-one lookup names it
        return None
    if code != kid.FOUND:
        r = int(np.searchsorted(ptr, at, side="right")) - 1
        cands = given[r]
        if isinstance(cands, IntIds):
            cands = [str(v) for v in cands.values.tolist()]
        elif isinstance(cands, np.ndarray):
            cands = cands.tolist()
        registry.raise_lookup(code, at - int(ptr[r]), cands)
    return ptr, idx
