"""Decision-log rows of a decided batch, built column-wise: one Arrow table per call.

The batch path of the facade logs R decisions without one record object per decision, in
schema version 3: the candidates and the choice are the registry's own int32 indices
(no id strings per row: those were most of a row's bytes and of the writer's encoding
CPU), resolved by the log's catalogue, which :class:`LoggedCatalogue` keeps in step with
the registry. Probabilities and contexts become list columns over the batch's CSR offsets,
and constraint names come from the ``adjusted`` bitmasks. Everything comes from inputs the
facade has checked and the pipeline's own outputs, so the rows are not checked again (the
loader's column and catalogue checks still apply to the parts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from allocator.decisions import Decision, Decisions
from allocator.errors import DecisionLogError
from allocator.logs import INDEXED_DECISION_SCHEMA, OUTCOME_SCHEMA, DecisionLogWriter
from allocator.logs.catalogue import catalogue_rows, new_epoch
from allocator.logs.indexed import IndexedDecision, list_column
from allocator.registry import ArmRegistry
from allocator.serving.config import Outcome

_INT32_END = 2**31


def _id_array(registry: ArmRegistry, start: int, stop: int) -> pa.Array:
    """The ids of arms ``start:stop`` as an Arrow string array: ASCII ids (one byte per
    character in the registry's table) are its bytes as they are, others are decoded."""
    _, chars, offsets = registry.id_table()
    lo, hi = int(offsets[start]), int(offsets[stop])
    if chars.dtype == np.uint8 and not (chars[lo:hi] & 0x80).any():
        ends = offsets[start : stop + 1] - lo
        return pa.LargeStringArray.from_buffers(
            stop - start, pa.py_buffer(ends.astype(np.int64)), pa.py_buffer(chars[lo:hi])
        ).cast(pa.string())
    return pa.array(registry.ids_of(np.arange(start, stop)), pa.string())


class LoggedCatalogue:
    """The registry's numbering, written to the log's catalogue as it grows.

    Indices are never reused and ids never change within a registry, so one epoch only
    grows (appended when arms are added). A different registry object (a reconfiguration,
    an adopted snapshot) continues the epoch if it numbers the logged arms alike, and
    starts a new one (the whole catalogue again) if not; so does a different writer.
    """

    def __init__(self) -> None:
        self._registry: ArmRegistry | None = None
        self._writer: DecisionLogWriter | None = None
        self._epoch = 0
        self._written = 0

    def _continues(self, registry: ArmRegistry) -> bool:
        """``registry`` numbers the logged arms as the last one did: same ids (compared as
        the id tables' bytes, not as strings) and same groups (compared by name)."""
        old, n = self._registry, self._written
        if old is None or registry.n_arms < n:
            return False
        (_, chars, offsets), (_, new_chars, new_offsets) = old.id_table(), registry.id_table()
        if chars.dtype == new_chars.dtype:
            end = int(offsets[n])
            same_ids = np.array_equal(offsets[: n + 1], new_offsets[: n + 1]) and np.array_equal(
                chars[:end], new_chars[:end]
            )
        else:
            head = np.arange(n)
            same_ids = np.array_equal(old.ids_of(head), registry.ids_of(head))
        code = {g: i for i, g in enumerate(registry.groups)}
        as_new = np.array([code.get(g, -1) for g in old.groups], dtype=np.int64)
        return same_ids and np.array_equal(as_new[old.arm_group[:n]], registry.arm_group[:n])

    def of(self, registry: ArmRegistry, writer: DecisionLogWriter) -> int:
        """The epoch naming ``registry``'s indices in ``writer``'s log, after buffering
        (never dropping) the catalogue rows the log does not have yet."""
        if writer is not self._writer or (
            registry is not self._registry and not self._continues(registry)
        ):
            self._writer, self._epoch, self._written = writer, new_epoch(), 0
        self._registry = registry
        n = registry.n_arms
        if n >= _INT32_END:
            raise DecisionLogError(f"{n} arms: the decision log indexes at most 2**31 - 1")
        if n > self._written:
            fresh = np.arange(self._written, n)
            groups = pa.array(registry.groups, pa.string()).take(
                pa.array(registry.arm_group[fresh])
            )
            ids = _id_array(registry, self._written, n)
            rows = catalogue_rows(self._epoch, self._written, ids, groups)
            writer.write_rows("catalogue", rows)
            self._written = n
        return self._epoch


def _adjusted_by(adjusted: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    """list<string> of the constraint names set in each request's bitmask."""
    r = adjusted.shape[0]
    bits = (adjusted[:, None] >> np.arange(max(len(names), 1))) & 1 if names else None
    if bits is None or not bits.any():
        return list_column(np.zeros(r + 1, dtype=np.int64), pa.array([], pa.string()))
    rows, cols = np.nonzero(bits)
    offsets = np.zeros(r + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=r), out=offsets[1:])
    return list_column(offsets, pa.array(np.asarray(names, dtype=object)[cols], pa.string()))


def _attrs(attrs: Sequence[Mapping[str, str] | None]) -> pa.Array:
    """map<string, string> of each request's attributes (checked strings already)."""
    offsets = np.zeros(len(attrs) + 1, dtype=np.int64)
    keys: list[str] = []
    values: list[str] = []
    for i, a in enumerate(attrs):
        if a:
            keys.extend(a.keys())
            values.extend(a.values())
        offsets[i + 1] = len(keys)
    return pa.MapArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(keys, pa.string()),
        pa.array(values, pa.string()),
    )  # fmt: skip


def decision_rows(
    out: Decisions, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray | None,
    attrs: Sequence[Mapping[str, str] | None], epoch: int, policy_kind: str,
) -> pa.Table:  # fmt: skip
    """The log table of a decided batch (``epoch``: :meth:`LoggedCatalogue.of` the
    registry that numbered ``idx``)."""
    assert out.decision_ids is not None and out.request_ids is not None
    r = len(out)
    context = (
        pa.nulls(r, INDEXED_DECISION_SCHEMA.field("context").type) if xs is None
        else list_column(np.arange(r + 1) * xs.shape[1], pa.array(xs.ravel()))
    )  # fmt: skip
    columns = {
        "decision_id": pa.array(out.decision_ids, pa.string()),
        "request_id": pa.array(out.request_ids, pa.string()),
        "timestamp": pa.array(out.timestamps),
        "catalogue": pa.array(np.full(r, epoch, dtype=np.int64)),
        "arm_index": pa.array(out.arms.astype(np.int32)),
        "propensity": pa.array(out.propensities),
        "forced": pa.array(out.forced >= 0),
        "model_version": pa.array(np.full(r, out.model_version, dtype=np.int64)),
        "policy_kind": pa.array(np.full(r, policy_kind, dtype=object), pa.string()),
        "candidate_indices": list_column(ptr, pa.array(idx.astype(np.int32))),
        "candidate_probabilities": list_column(ptr, pa.array(out.probabilities)),
        "context": context,
        "attrs": _attrs(attrs),
        "adjusted_by": _adjusted_by(out.adjusted, out.constraint_names),
    }
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in INDEXED_DECISION_SCHEMA],
        schema=INDEXED_DECISION_SCHEMA,
    )


def decision_row(
    d: Decision, decision_id: str, request_id: str | None, epoch: int, policy_kind: str,
    cand: np.ndarray, probabilities: np.ndarray, x: np.ndarray | None,
    attrs: Mapping[str, str] | None,
) -> IndexedDecision:  # fmt: skip
    """One schema-3 row of the decision log, as :func:`decision_rows` writes it for one
    request (candidates as the writer's catalogue indices; ``x`` the (1, d) context), made
    a table when the writer drains; the arrays it holds are copies the row owns."""
    return IndexedDecision(
        decision_id, request_id, d.timestamp, epoch, d.arm_index, d.propensity, d.forced,
        d.model_version, policy_kind, cand.astype(np.int32), probabilities,
        None if x is None else x[0].copy(), None if attrs is None else dict(attrs),
        d.adjusted_by,
    )  # fmt: skip


def outcome_rows(
    ids: list[str], times: np.ndarray, outcome: Outcome, rewards: np.ndarray, source: str
) -> pa.Table:
    """The log table of one outcome learned for many decisions (the default outcome of
    expired or evicted ones), ``times`` and ``rewards`` per decision."""
    n = len(ids)
    columns = {
        "decision_id": pa.array(ids, pa.string()),
        "timestamp": pa.array(times),
        "click": pa.array(np.full(n, outcome.click)),
        "order": pa.array(np.full(n, outcome.order)),
        "gmv": pa.array(np.full(n, outcome.gmv)),
        "reward": pa.array(rewards),
        "source": pa.array(np.full(n, source, dtype=object), pa.string()),
    }
    return pa.Table.from_arrays([columns[f.name] for f in OUTCOME_SCHEMA], schema=OUTCOME_SCHEMA)
