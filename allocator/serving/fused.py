"""The facade's fused single decision: ids resolved and decided in one compiled call.

The serving layer's retrieval hands over merchant ids, and most requests are a list of str
for a context-free family without contracts. For those, the id lookup and the lean decide
kernel run as one bound entry point (:meth:`Policy.decide_joined`) instead of two compiled
calls with Python between them. Any other request shape returns None and takes the general
path, which raises its errors in its own order; a request taken here raises the same errors
(the lookup's first, then the kernel's candidate checks) with nothing changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.kernels import idtable as kid


def decide_ids(
    engine: Engine, candidates: Any, context: Any, attrs: Any
) -> tuple[np.ndarray, int] | None:
    """(candidate indices, chosen position) for ``candidates`` given as a list or tuple of
    str, when the request fits the fused path (no context, attributes or contracts, a
    family with :attr:`Policy.DECIDE_JOINED`); else None, nothing done. The caller checked
    everything else the general path checks before the decision (time, admission)."""
    policy = engine.policy
    kind = type(candidates)
    if (
        (kind is not list and kind is not tuple) or not candidates or context is not None
        or attrs is not None or policy.DECIDE_JOINED is None or engine.contracts.names
    ):  # fmt: skip
        return None
    registry = policy.registry
    q = registry.joined_ids(candidates)
    if q is None:
        return None
    cand = np.empty(len(candidates), dtype=np.int64)
    pos, status, at = policy.decide_joined(q, cand)
    if pos >= 0:
        return cand, pos
    if status == kid.MISSPLIT:  # an id holds a NUL: the general path names it
        return None
    registry.raise_lookup(status, at, candidates)
