"""The facade's fused single decision: ids resolved and decided in one compiled call.

The serving layer's retrieval hands over merchant ids (a list of str, or a numpy string
array). The id lookup and the family's decide run as one bound entry point instead of two
compiled calls with Python between them: without contracts the lean kernel
(:meth:`Policy.decide_joined`: a context-free family, or the shared linear one), with
contracts in force the family's contracted kernel (:meth:`Policy.decide_contracted`: the
shared linear one, floors, tilt and cold-start floor included, whose 200 candidate ids of
10^6 merchants are the target request; indices take it too). Any other request shape
returns None and takes the general path, which raises its errors in its own order; a
request taken here raises the same errors (the lookup's first, then the kernel's candidate
checks) with nothing changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.kernels import idtable as kid
from allocator.registry import ArmRegistry

_REAL = np.dtype(np.float64)
_INDEX = np.dtype(np.int64)

#: (candidate indices, chosen position, context row, the chosen arm's id as given,
#: forcing contract or -1, adjusted bitmask)
Fused = tuple[np.ndarray, int, np.ndarray | None, str | None, int, int]


def decide_fused(
    engine: Engine, candidates: Any, context: Any, attrs: Any, t: float
) -> Fused | None:
    """The decision at time ``t`` (the id a list gave for the chosen arm, the id a string
    array resolved to, or None for indices) for a request that fits the fused path:
    candidates as a list or tuple of str or a 1-d numpy string array, or a C-contiguous
    int64 index array (for a context-free family without contracts, or under contracts),
    attributes the contracts encode, a family with the entry the request needs
    (:attr:`Policy.DECIDE_JOINED` without contracts, :attr:`Policy.DECIDE_CONTRACTED` with
    them), and for a contextual family a context given as a float64 array of its width.
    Else None, nothing done: the general path then takes it, and raises its errors in its
    own order (attributes or a context the kernel refuses, after the ids were found good,
    are left to it too). The caller checked everything else the general path checks
    before the decision (time, admission)."""
    policy = engine.policy
    contracts = engine.contracts
    contracted = bool(contracts.names)
    if (policy.DECIDE_CONTRACTED if contracted else policy.DECIDE_JOINED) is None:
        return None
    try:
        codes = contracts.encode(attrs)
    except Exception:  # the general path raises it, after the lookup
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
    elif kind is np.ndarray and candidates.dtype == _INDEX:
        if candidates.ndim != 1 or not candidates.flags.c_contiguous:
            return None
        if contracted:
            return _contracted(engine, None, candidates, x, t, codes, candidates)
        if d is not None:
            return None
        # indices as the kernels take them: the general path's own call, minus its layers
        pos, _, _ = policy.decide_one(candidates, policy.context_row(None), 0.0, codes, None)
        return candidates, pos, None, None, -1, 0
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
    if contracted:
        return _contracted(engine, q, cand, x, t, codes, candidates)
    return _found(policy.registry, cand, policy.decide_joined(q, cand, x), x, candidates)


def _contracted(
    engine: Engine, q: np.ndarray | None, cand: np.ndarray, x: np.ndarray | None, t: float,
    codes: np.ndarray, candidates: Any,
) -> Fused | None:  # fmt: skip
    """The request under the engine's contracts, as :meth:`Engine.decide_prepared` would
    decide it (buffers reserved, the same contract arrays), in one compiled call."""
    policy, contracts, reg = engine.policy, engine.contracts, engine.registry
    contracts.reserve(reg.capacity, cand.shape[0])
    args = contracts.kernel_args(reg.arm_group, policy.state.n_obs)
    out = policy.decide_contracted(q, cand, x, t, codes, args)
    if q is None:
        return (cand, out[0], x, None, out[1], out[2]) if out[0] >= 0 else None
    return _found(policy.registry, cand, out, x, candidates)


def _found(
    registry: ArmRegistry, cand: np.ndarray, out: tuple[int, int, int], x: np.ndarray | None,
    candidates: Any,
) -> Fused | None:  # fmt: skip
    """The fused result of an id query from the kernel's ``out`` (position, forcing
    contract, adjusted bitmask), or None (a refused context, an id holding a NUL), or the
    lookup's error raised (``out`` = (-1, status, position) of the first id refused)."""
    pos, status, at = out
    if pos >= 0:  # a string array's item is its id as resolved (numpy drops trailing NULs)
        kind = type(candidates)
        given = candidates[pos] if kind is not np.ndarray else candidates.item(pos)
        return cand, pos, x, given, status, at
    if status < 0 or status == kid.MISSPLIT:
        return None
    ids = candidates.tolist() if type(candidates) is np.ndarray else candidates  # str
    registry.raise_lookup(status, at, ids)
