"""A batch's request attributes checked and encoded by passes over the whole batch.

Request attributes are logged and scope contracts, so every key and value must be a
string. Checked and encoded one request at a time that costs ~10 µs of Python per request
(isinstance checks through ``Mapping``, a code row per request); here the common form —
each request's ``attrs`` None or a plain ``dict`` — is checked by type sets over the
whole batch and encoded one attribute column at a time, with C-level ``map`` passes. Any
other form, or any bad key or value, returns None: the caller then checks and encodes
request by request, which raises the exact error naming the first bad request.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, repeat
from operator import methodcaller
from typing import Any

import numpy as np

_PLAIN = frozenset({dict, type(None)})
_STR = frozenset({str})
_EMPTY: dict[str, str] = {}


def plain_attrs(attrs: Sequence[Any]) -> bool:
    """True when every entry is None or a ``dict`` of ``str`` keys to ``str`` values."""
    if not set(map(type, attrs)) <= _PLAIN:
        return False
    dicts = [a for a in attrs if a is not None]
    return (
        set(map(type, chain.from_iterable(dicts))) <= _STR
        and set(map(type, chain.from_iterable(map(dict.values, dicts)))) <= _STR
    )


def encode_plain(
    attrs: Sequence[Any], names: Sequence[str], vocab: Sequence[dict[str, int]]
) -> np.ndarray | None:
    """(R, A) codes of the attribute ``names`` (their value codes in ``vocab``; 0 for a
    value no scope names, or no value) when :func:`plain_attrs`; else None."""
    if not plain_attrs(attrs):
        return None
    n = len(attrs)
    out = np.zeros((n, len(names)), dtype=np.int64)
    rows = [_EMPTY if a is None else a for a in attrs]
    for i, name in enumerate(names):
        values = map(methodcaller("get", name), rows)
        out[:, i] = np.fromiter(map(vocab[i].get, values, repeat(0)), np.int64, n)
    return out
