"""Request mappings (the facade's ``decide_many`` input) checked and shaped as one batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import InvalidInputError

KEYS = frozenset({"candidates", "context", "attrs", "timestamp", "request_id"})


@dataclass(frozen=True)
class RequestBatch:
    """R requests as CSR candidates (indices), (R, d) contexts, times, attributes, ids."""

    ptr: np.ndarray
    idx: np.ndarray
    contexts: np.ndarray | None
    times: np.ndarray
    attrs: list[Mapping[str, str] | None]
    request_ids: tuple[str | None, ...]


def request_batch(
    engine: Engine, requests: Sequence[Mapping[str, Any]],
    resolve_time: Callable[[Any, str], float], resolve_context: Callable[[Any], Any],
) -> RequestBatch:  # fmt: skip
    """Check every request (keys, candidates, context, time) before any is decided.

    ``resolve_time(timestamp, where)`` gives a request's time (or raises);
    ``resolve_context`` turns a named-feature mapping into an array. Raises
    :class:`InvalidInputError` naming the request.
    """
    if not isinstance(requests, Sequence) or not all(isinstance(r, Mapping) for r in requests):
        raise InvalidInputError("requests must be a sequence of mappings")
    for i, req in enumerate(requests):
        if set(req) - KEYS or "candidates" not in req:
            raise InvalidInputError(
                f"requests[{i}]: keys must be among {sorted(KEYS)} with 'candidates', "
                f"got {sorted(req)}"
            )
    times = np.array(
        [resolve_time(r.get("timestamp"), f"requests[{i}]") for i, r in enumerate(requests)],
        dtype=np.float64,
    )
    cands = [engine.resolve(r["candidates"]) for r in requests]
    ptr = np.zeros(len(requests) + 1, dtype=np.int64)
    np.cumsum([c.shape[0] for c in cands], out=ptr[1:])
    idx = np.concatenate(cands) if cands else np.zeros(0, dtype=np.int64)
    policy = engine.policy
    xs = None
    if policy.n_features is not None:
        rows = [policy.context_row(resolve_context(r.get("context")))[0] for r in requests]
        xs = np.stack(rows) if rows else np.zeros((0, policy.n_features))
    return RequestBatch(
        ptr, idx, xs, times, [r.get("attrs") for r in requests],
        tuple(r.get("request_id") for r in requests),
    )  # fmt: skip
