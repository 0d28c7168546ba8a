"""Schema-3 decision rows one at a time: the single decision's log row, made into a table
only when the writer drains its buffer.

A single decision used to log a schema-2 record (200 candidate id strings spelled per
decision), so a log mixed v2 and v3 parts. :class:`IndexedDecision` holds what a v3 row
holds, as the serving layer has it (the candidates' registry indices, the probabilities
and context arrays): buffering one costs a tuple, and :func:`indexed_table` turns a run of
them into the table the batch path would have written for the same decisions, column by
column, on the writer's flusher thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from allocator.errors import InvalidInputError
from allocator.logs.schema import INDEXED_DECISION_SCHEMA


class IndexedDecision(NamedTuple):
    """One decision row of :data:`INDEXED_DECISION_SCHEMA`, built from checked inputs and
    arrays the row owns (nobody writes them after)."""

    decision_id: str
    request_id: str | None
    timestamp: float
    catalogue: int
    arm_index: int
    propensity: float
    forced: bool
    model_version: int
    policy_kind: str
    candidate_indices: np.ndarray  # int32 (n,) indices into the catalogue epoch
    candidate_probabilities: np.ndarray  # float64 (n,)
    context: np.ndarray | None  # float64 (d,)
    attrs: Mapping[str, str] | None
    adjusted_by: Sequence[str]


def list_column(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    """A list column whose row ``i`` holds ``values[offsets[i]:offsets[i + 1]]`` (``offsets``
    (R + 1,) integers, made the int32 offsets of the log schema's list types; a column past
    2^31 values is refused, never wrapped)."""
    if offsets.shape[0] and int(offsets[-1]) > np.iinfo(np.int32).max:
        raise InvalidInputError(
            f"a list column of {int(offsets[-1])} values exceeds the log schema's 32-bit "
            "offsets: log fewer rows per call"
        )
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _stacked(values: list[np.ndarray], item: pa.DataType) -> pa.Array:
    """The list column of one array per row."""
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([v.shape[0] for v in values], out=offsets[1:])
    return list_column(offsets, pa.array(np.concatenate(values), item))


#: the columns not built as ``pa.array(values, field.type)`` from the rows' values
_LISTS = {"candidate_indices": pa.int32(), "candidate_probabilities": pa.float64()}


def indexed_table(rows: Sequence[IndexedDecision]) -> pa.Table:
    """The v3 decision table of ``rows`` (at least one), in their order; columns are taken
    from the rows by the schema's field names (:class:`IndexedDecision` spells them alike)."""
    cols = dict(zip(IndexedDecision._fields, zip(*rows, strict=True), strict=True))
    contexts = cols["context"]
    context_type = INDEXED_DECISION_SCHEMA.field("context").type
    given = [c is not None for c in contexts]
    if not any(given):
        context = pa.nulls(len(rows), context_type)
    elif all(given):
        context = _stacked(list(contexts), pa.float64())
    else:  # rows of a context-free and a contextual policy (a reconfiguration between)
        context = pa.array([None if c is None else c.tolist() for c in contexts], context_type)
    columns = {
        **{name: _stacked(list(cols[name]), item) for name, item in _LISTS.items()},
        "context": context,
        "attrs": pa.array(
            [list((a or {}).items()) for a in cols["attrs"]], pa.map_(pa.string(), pa.string())
        ),
        "adjusted_by": pa.array([list(n) for n in cols["adjusted_by"]], pa.list_(pa.string())),
    }
    return pa.Table.from_arrays(
        [
            (columns[f.name] if f.name in columns else pa.array(cols[f.name], f.type)).cast(f.type)
            for f in INDEXED_DECISION_SCHEMA
        ],
        schema=INDEXED_DECISION_SCHEMA,
    )
