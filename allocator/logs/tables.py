"""Whole Arrow tables of the decision log, validated column-wise: the batch path.

A simulator or a bulk export holds its decisions as arrays already; building one
:class:`~allocator.logs.DecisionRecord` per row only to take it apart again would cost more
than the simulation. :func:`check_table` applies the record checks of
:mod:`allocator.logs.schema` to whole columns instead (one vectorised pass per rule) and
returns the table in the stream's exact schema, ready for
:meth:`~allocator.logs.DecisionLogWriter.write_table`. Decisions are read as version 3
(catalogue indices) when they have a ``candidate_indices`` column, else as version 2 (id
strings). Not checked here: that a row's candidates are distinct (the record path checks
it), and that indices name ids of their catalogue (:mod:`allocator.logs.catalogue`, which
sees every catalogue part).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from allocator.errors import InvalidInputError
from allocator.inputs import invalid_utf8
from allocator.logs.schema import (
    KINDS,
    OUTCOME_SOURCES,
    PROPENSITY_TOL,
    SUM_TOL,
    VERSIONED,
    Kind,
    schema_version,
)

Mask = npt.NDArray[np.bool_]


def _numbers(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _require(ok: Mask, name: str, values: Any, expected: str) -> None:
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        value = values[row].item() if isinstance(values, np.ndarray) else values[row].as_py()
        raise InvalidInputError(f"{name}[{row}] = {value!r}: expected {expected}")


def _conform(kind: Kind, table: pa.Table, version: int) -> pa.Table:
    schema = VERSIONED[kind, version]
    missing = [n for n in schema.names if n not in table.column_names]
    extra = [n for n in table.column_names if n not in schema.names]
    if missing or extra:
        raise InvalidInputError(
            f"{kind} table: missing columns {missing}, unknown columns {extra}; "
            f"expected {schema.names}"
        )
    columns = []
    for f in schema:
        column = table.column(f.name)
        try:
            column = column.cast(f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InvalidInputError(f"{kind} column {f.name}: expected {f.type} ({err})") from None
        if not f.nullable and column.null_count:
            _require(~_numbers(column.is_null()), f.name, column, "a value (not null)")
        _require_utf8(kind, f.name, column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _require_utf8(kind: Kind, name: str, column: pa.ChunkedArray) -> None:
    """Text (at any depth: a map's keys, a list's items) must be UTF-8: Parquet stores
    whatever bytes a writer marked as text, and Python fails on them only when it reads
    them. One C pass says whether; the first bad row is named when the column is text."""
    try:
        column.validate(full=True)
    except pa.ArrowInvalid as err:
        bad = invalid_utf8(column)
        where = f" (row {int(np.flatnonzero(bad)[0])})" if bad is not None and bad.any() else ""
        raise InvalidInputError(f"{kind} column {name}{where}: invalid text ({err})") from None


def _nonempty(table: pa.Table, *names: str) -> None:
    for name in names:
        column = table.column(name)
        _require(_numbers(pc.utf8_length(column)) > 0, name, column, "a non-empty string")


def _finite(table: pa.Table, name: str, low: float = -np.inf) -> None:
    x = _numbers(table.column(name))
    expected = "a finite number" + (" >= 0" if low == 0 else "")
    _require(np.isfinite(x) & (x >= low), name, x, expected)


def _check_decisions(t: pa.Table) -> None:
    indexed = "candidate_indices" in t.column_names
    if not indexed:
        _nonempty(t, "arm_id", "group")
    _nonempty(t, "decision_id", "policy_kind")
    _finite(t, "timestamp")
    for name in ("arm_index", "model_version"):
        _finite(t, name, 0.0)
    p = _numbers(t.column("propensity"))
    _require((p > 0.0) & (p <= 1.0), "propensity", p, "a probability in (0, 1]")
    cand_name = "candidate_indices" if indexed else "candidates"
    cands = pa.chunked_array(t.column(cand_name)).combine_chunks()
    probs = pa.chunked_array(t.column("candidate_probabilities")).combine_chunks()
    n_cand = _numbers(pc.list_value_length(cands))
    _require(n_cand > 0, cand_name, cands, "at least one candidate")
    n_prob = _numbers(pc.list_value_length(probs))
    _require(n_prob == n_cand, "candidate_probabilities", probs, "one probability per candidate")
    flat_p = _numbers(pc.list_flatten(probs)).astype(np.float64)
    ok = np.isfinite(flat_p) & (flat_p >= 0.0) & (flat_p <= 1.0)
    rows = _numbers(pc.list_parent_indices(cands)).astype(np.int64)
    bad_row = np.zeros(len(t), dtype=bool)
    bad_row[rows[~ok]] = True
    _require(~bad_row, "candidate_probabilities", probs, "probabilities in [0, 1]")
    sums = np.bincount(rows, weights=flat_p, minlength=len(t))
    expected = "probabilities in [0, 1] summing to 1"
    _require(np.abs(sums - 1.0) <= SUM_TOL, "candidate_probabilities", probs, expected)
    flat_c = _numbers(pc.list_flatten(cands))
    if indexed:
        bad_row[:] = False
        bad_row[rows[flat_c < 0]] = True
        _require(~bad_row, cand_name, cands, "catalogue indices >= 0")
        chosen = flat_c == _numbers(t.column("arm_index"))[rows]
        arm_name = "arm_index"
    else:
        chosen = _numbers(pc.equal(pc.list_flatten(cands), pc.take(t.column("arm_id"), rows)))
        arm_name = "arm_id"
    hits = np.bincount(rows[chosen], minlength=len(t))
    _require(hits == 1, arm_name, t.column(arm_name), "exactly one of the row's candidates")
    at_choice = np.empty(len(t))
    at_choice[rows[chosen]] = flat_p[chosen]
    expected = "the chosen arm's candidate probability"
    _require(np.abs(at_choice - p) <= PROPENSITY_TOL, "propensity", p, expected)
    context = pa.chunked_array(t.column("context")).combine_chunks()
    x = _numbers(pc.list_flatten(context)).astype(np.float64)
    bad_row[:] = False
    bad_row[_numbers(pc.list_parent_indices(context)).astype(np.int64)[~np.isfinite(x)]] = True
    _require(~bad_row, "context", context, "finite numbers")


def _check_catalogue(t: pa.Table) -> None:
    _nonempty(t, "arm_id", "group")
    _finite(t, "arm_index", 0.0)


def _check_outcomes(t: pa.Table) -> None:
    _nonempty(t, "decision_id")
    _finite(t, "timestamp")
    for name in ("click", "order", "gmv"):
        _finite(t, name, 0.0)
    _finite(t, "reward")
    known = _numbers(pc.is_in(t.column("source"), value_set=pa.array(OUTCOME_SOURCES)))
    _require(known, "source", t.column("source"), f"one of {OUTCOME_SOURCES}")


def check_table(kind: Kind, table: pa.Table, version: int | None = None) -> pa.Table:
    """``table`` in the exact schema of ``kind`` (columns ordered, types cast); raises
    :class:`InvalidInputError` naming the first bad column and row."""
    if kind not in KINDS:
        raise InvalidInputError(f"kind = {kind!r}: expected one of {list(KINDS)}")
    if not isinstance(table, pa.Table):
        raise InvalidInputError(f"table = {type(table).__name__}: expected a pyarrow.Table")
    if version is None:
        version = schema_version(kind, table.column_names)
    conformed = _conform(kind, table, version)
    if len(conformed):
        checks = {
            "catalogue": _check_catalogue,
            "decisions": _check_decisions,
            "outcomes": _check_outcomes,
        }
        checks[kind](conformed)
    return conformed
