"""Request mappings (the facade's ``decide_many`` input) checked and shaped as one batch.

The common forms are checked as whole arrays: float timestamps (range and jump), contexts
given as float64 arrays of the model's width (finiteness and bound), candidates given as
int64 index arrays (one concatenation; the kernel checks range, activity and duplicates).
Any other form, and any batch whose array check fails, takes the request-by-request path,
so a bad request is refused with the same error, naming the same request, either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import InvalidInputError

KEYS = frozenset({"candidates", "context", "attrs", "timestamp", "request_id"})
_INDEX = np.dtype(np.int64)
_REAL = np.dtype(np.float64)


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
    resolve_times: Callable[[list[Any]], np.ndarray], resolve_context: Callable[[Any], Any],
) -> RequestBatch:  # fmt: skip
    """Check every request (keys, candidates, context, time) before any is decided.

    ``resolve_times(timestamps)`` gives the requests' times (or raises, naming the first
    bad request); ``resolve_context`` turns a named-feature mapping into an array. Raises
    :class:`InvalidInputError` naming the request.
    """
    if not isinstance(requests, Sequence) or not all(isinstance(r, Mapping) for r in requests):
        raise InvalidInputError("requests must be a sequence of mappings")
    for i, req in enumerate(requests):
        if not req.keys() <= KEYS or "candidates" not in req:
            raise InvalidInputError(
                f"requests[{i}]: keys must be among {sorted(KEYS)} with 'candidates', "
                f"got {sorted(req)}"
            )
    times = resolve_times([r.get("timestamp") for r in requests])
    ptr, idx = _candidates(engine, [r["candidates"] for r in requests])
    policy = engine.policy
    xs = None
    if policy.n_features is not None:
        given = [r.get("context") for r in requests]
        xs = _contexts(given, policy.n_features, policy.input_bound)
        if xs is None:
            rows = [policy.context_row(resolve_context(c))[0] for c in given]
            xs = np.stack(rows) if rows else np.zeros((0, policy.n_features))
    return RequestBatch(
        ptr, idx, xs, times, [r.get("attrs") for r in requests],
        tuple(r.get("request_id") for r in requests),
    )  # fmt: skip


def _candidates(engine: Engine, given: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """CSR offsets and indices of the requests' candidate lists."""
    if all(type(c) is np.ndarray and c.dtype == _INDEX and c.ndim == 1 for c in given):
        cands = given  # indices as the kernels take them: range is the kernel's check
    else:
        cands = [engine.resolve(c) for c in given]
    ptr = np.zeros(len(cands) + 1, dtype=np.int64)
    np.cumsum([c.shape[0] for c in cands], out=ptr[1:])
    idx = np.concatenate(cands) if cands else np.zeros(0, dtype=np.int64)
    return ptr, idx


def _contexts(given: list[Any], d: int, bound: float) -> np.ndarray | None:
    """The (R, d) contexts when every one is a float64 array of width ``d`` with entries
    within ``bound`` (checked as one array); None otherwise (checked one by one)."""
    if not given or not all(
        type(c) is np.ndarray and c.dtype == _REAL and c.shape == (d,) for c in given
    ):
        return None
    xs = np.stack(given)
    return xs if np.abs(xs).max(initial=0.0) <= bound else None  # NaN fails the comparison
