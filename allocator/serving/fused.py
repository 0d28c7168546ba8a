"""The facade's fused single decision: ids resolved and decided in one compiled call.

The serving layer's retrieval hands over merchant ids (a list of str, or a numpy string
array), and most requests come without contracts in force. For those, the id lookup and the
family's lean decide kernel run as one bound entry point (:meth:`Policy.decide_joined`)
instead of two compiled calls with Python between them: a context-free family (Beta) or
the shared linear one, whose 200 candidate ids of 10^6 merchants are the target request.
Any other request shape returns None and takes the general path, which raises its errors in
its own order; a request taken here raises the same errors (the lookup's first, then the
kernel's candidate checks) with nothing changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.kernels import idtable as kid

_REAL = np.dtype(np.float64)
_INDEX = np.dtype(np.int64)


def decide_fused(
    engine: Engine, candidates: Any, context: Any, attrs: Any
) -> tuple[np.ndarray, int, np.ndarray | None, str | None] | None:
    """(candidate indices, chosen position, context row, the chosen arm's id as given: the
    id it resolved to, or None for indices) for a request that fits the fused
    path: candidates as a list or tuple of str or a 1-d numpy string array (or, for a
    context-free family, a C-contiguous int64 index array, decided by the same call the
    general path ends in), no attributes, no contract in force, a family with
    :attr:`Policy.DECIDE_JOINED`, and for a contextual family a context given as a float64
    array of its width. Else None, nothing done: the
    general path then takes it, and raises its errors in its own order (a context the
    kernel refuses, after the ids were found good, is left to it too). The caller checked
    everything else the general path checks before the decision (time, admission)."""
    policy = engine.policy
    if attrs is not None or policy.DECIDE_JOINED is None or engine.contracts.names:
        return None
    d = policy.n_features
    x = None
    if d is not None:
        if not (
            type(context) is np.ndarray and context.dtype == _REAL and context.shape == (d,)
            and context.flags.c_contiguous
        ):  # fmt: skip
            return None
        x = context.reshape(1, d)
    elif context is not None:
        return None
    kind = type(candidates)
    if kind is list or kind is tuple:
        if not candidates:
            return None
        q = policy.registry.joined_ids(candidates)
        if q is None:
            return None
    elif kind is np.ndarray and candidates.dtype == _INDEX and d is None:
        if candidates.ndim != 1 or not candidates.flags.c_contiguous:
            return None
        # indices as the kernels take them: the general path's own call, minus its layers
        row, codes = policy.context_row(None), engine.contracts.encode(None)
        pos, _, _ = policy.decide_one(candidates, row, 0.0, codes, None)
        return candidates, pos, None, None
    elif kind is np.ndarray and candidates.dtype.kind == "U" and candidates.ndim == 1:
        if not (
            candidates.shape[0] and candidates.dtype.itemsize and candidates.dtype.isnative
            and candidates.flags.c_contiguous and candidates.flags.writeable
        ):  # fmt: skip
            return None
        q = candidates.view(np.uint32).reshape(candidates.shape[0], -1)
    else:
        return None
    cand = np.empty(len(candidates), dtype=np.int64)
    pos, status, at = policy.decide_joined(q, cand, x)
    if pos >= 0:  # a string array's item is its id as resolved (numpy drops trailing NULs)
        return cand, pos, x, candidates[pos] if kind is not np.ndarray else candidates.item(pos)
    if status < 0 or status == kid.MISSPLIT:  # a refused context, an id holding a NUL
        return None
    ids = candidates.tolist() if kind is np.ndarray else candidates  # str, not np.str_
    policy.registry.raise_lookup(status, at, ids)
