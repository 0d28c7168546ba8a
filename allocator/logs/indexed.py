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


def _list_column(values: list[np.ndarray], item: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([v.shape[0] for v in values], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(values), item))


def indexed_table(rows: Sequence[IndexedDecision]) -> pa.Table:
    """The v3 decision table of ``rows`` (at least one), in their order."""
    cols = list(zip(*rows, strict=True))
    contexts = cols[11]
    context_type = INDEXED_DECISION_SCHEMA.field("context").type
    given = [c is not None for c in contexts]
    if not any(given):
        context = pa.nulls(len(rows), context_type)
    elif all(given):
        context = _list_column(list(contexts), pa.float64())
    else:  # rows of a context-free and a contextual policy (a reconfiguration between)
        context = pa.array([None if c is None else c.tolist() for c in contexts], context_type)
    columns = [
        pa.array(cols[0], pa.string()),
        pa.array(cols[1], pa.string()),
        pa.array(cols[2], pa.float64()),
        pa.array(cols[3], pa.int64()),
        pa.array(cols[4], pa.int32()),
        pa.array(cols[5], pa.float64()),
        pa.array(cols[6], pa.bool_()),
        pa.array(cols[7], pa.int64()),
        pa.array(cols[8], pa.string()),
        _list_column(list(cols[9]), pa.int32()),
        _list_column(list(cols[10]), pa.float64()),
        context,
        pa.array([list((a or {}).items()) for a in cols[12]], pa.map_(pa.string(), pa.string())),
        pa.array([list(n) for n in cols[13]], pa.list_(pa.string())),
    ]
    return pa.Table.from_arrays(
        [c.cast(f.type) for c, f in zip(columns, INDEXED_DECISION_SCHEMA, strict=True)],
        schema=INDEXED_DECISION_SCHEMA,
    )
