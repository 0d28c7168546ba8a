"""Request mappings (the facade's ``decide_many`` input) checked and shaped as one batch.

The common forms are checked as whole arrays or by C-level passes over the batch: plain
``dict`` requests (types and keys as sets), float timestamps (range and jump), contexts
given as float64 arrays of the model's width (finiteness and bound), candidates in one
form for the whole batch (one concatenation or one join, and one compiled lookup:
:mod:`allocator.engine.candidates`; the kernel checks range, activity and duplicates),
attributes as plain dicts of strings (:mod:`allocator.engine.attrs`). Any other form, and
any batch whose whole check fails, takes the request-by-request path, so a bad request is
refused with the same error, naming the same request, either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter, methodcaller
from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import InvalidInputError, brief

KEYS = frozenset({"candidates", "context", "attrs", "timestamp", "request_id"})
_REALS = frozenset({np.dtype(np.float64)})
_ARRAY = frozenset({np.ndarray})
_dtype = attrgetter("dtype")
_shape = attrgetter("shape")
_DICT = frozenset({dict})
_ID_TYPES = frozenset({str, type(None)})
_get_candidates = itemgetter("candidates")
_get_timestamp = methodcaller("get", "timestamp")
_get_context = methodcaller("get", "context")
_get_attrs = methodcaller("get", "attrs")
_get_request_id = methodcaller("get", "request_id")


@dataclass(frozen=True)
class RequestBatch:
    """R requests as CSR candidates (indices), (R, d) contexts, times, attributes, ids.

    ``codes`` holds the attributes' (R, A) contract codes when every request's ``attrs``
    is None or a plain dict of strings (else None: encoded, and refused, request by
    request); ``plain_ids`` says every ``request_id`` is a str or None."""

    ptr: np.ndarray
    idx: np.ndarray
    contexts: np.ndarray | None
    times: np.ndarray
    attrs: list[Mapping[str, str] | None]
    request_ids: tuple[str | None, ...]
    codes: np.ndarray | None = None
    plain_ids: bool = False


def request_batch(
    engine: Engine, requests: Sequence[Mapping[str, Any]],
    resolve_times: Callable[[list[Any]], np.ndarray], resolve_context: Callable[[Any], Any],
) -> RequestBatch:  # fmt: skip
    """Check every request (keys, candidates, context, time) before any is decided.

    ``resolve_times(timestamps)`` gives the requests' times (or raises, naming the first
    bad request); ``resolve_context`` turns a named-feature mapping into an array. Raises
    :class:`InvalidInputError` naming the request.
    """
    given = _plain_candidates(requests)
    if given is None:
        given = _checked_candidates(requests)
    times = resolve_times(list(map(_get_timestamp, requests)))
    ptr, idx = engine.resolve_many(given)
    policy = engine.policy
    xs = None
    contexts = list(map(_get_context, requests))
    if policy.n_features is None:
        with_context = [i for i, c in enumerate(contexts) if c is not None]
        if with_context:  # as decide() refuses it: a context the model ignores is a mistake
            raise InvalidInputError(
                f"requests[{with_context[0]}]: {type(policy).__name__} takes no context, got one"
            )
    else:
        xs = _contexts(contexts, policy.n_features, policy.input_bound)
        if xs is None:
            rows = [policy.context_row(resolve_context(c))[0] for c in contexts]
            xs = np.stack(rows) if rows else np.zeros((0, policy.n_features))
    attrs = list(map(_get_attrs, requests))
    request_ids = tuple(map(_get_request_id, requests))
    return RequestBatch(
        ptr, idx, xs, times, attrs, request_ids, engine.encode_plain_attrs(attrs),
        set(map(type, request_ids)) <= _ID_TYPES,
    )  # fmt: skip


def _plain_candidates(requests: Any) -> list[Any] | None:
    """Every request's candidates when the requests are a list or tuple of plain dicts
    with known keys and candidates each (checked as sets); else None."""
    kind = type(requests)
    if (kind is not list and kind is not tuple) or not set(map(type, requests)) <= _DICT:
        return None
    if not set(chain.from_iterable(requests)) <= KEYS:
        return None
    try:
        return list(map(_get_candidates, requests))
    except KeyError:
        return None


def _checked_candidates(requests: Any) -> list[Any]:
    """Every request's candidates, each request checked in turn (the first bad one named)."""
    if not isinstance(requests, Sequence) or not all(isinstance(r, Mapping) for r in requests):
        raise InvalidInputError("requests must be a sequence of mappings")
    for i, req in enumerate(requests):
        if not req.keys() <= KEYS or "candidates" not in req:
            raise InvalidInputError(
                f"requests[{i}]: keys must be among {sorted(KEYS)} with 'candidates', "
                f"got {brief(sorted(req, key=brief))}"
            )
    return [r["candidates"] for r in requests]


def _contexts(given: list[Any], d: int, bound: float) -> np.ndarray | None:
    """The (R, d) contexts when every one is a float64 array of width ``d`` with entries
    within ``bound`` (types, dtypes and shapes checked as sets, values as one array); None
    otherwise (checked one by one)."""
    if (
        not given or set(map(type, given)) != _ARRAY
        or set(map(_dtype, given)) != _REALS or set(map(_shape, given)) != {(d,)}
    ):  # fmt: skip
        return None
    xs = np.stack(given)
    return xs if np.abs(xs).max(initial=0.0) <= bound else None  # NaN fails the comparison


def resolve_context(feature_index: Mapping[str, int], context: Any) -> Any:
    """A context given as a mapping of ``serving.feature_names`` to numbers, as the float
    array the policy reads; any other form is returned as it is (the policy checks it)."""
    if context is None or type(context) is np.ndarray or not isinstance(context, Mapping):
        return context  # the policy checks it
    if not feature_index:
        raise InvalidInputError("context is a mapping, but serving.feature_names is not set")
    x = np.zeros(len(feature_index))
    for name, value in context.items():
        i = feature_index.get(name)
        if i is None:
            raise InvalidInputError(
                f"context feature {brief(name)} is not in serving.feature_names"
            )
        real = isinstance(value, (int, float, np.integer, np.floating))
        if isinstance(value, bool) or not real:
            raise InvalidInputError(f"context[{name!r}] must be a number, got {brief(value)}")
        try:
            x[i] = value
        except OverflowError:  # a Python int past float range
            raise InvalidInputError(
                f"context[{name!r}] = {brief(value)}: expected a finite number"
            ) from None
    return x
