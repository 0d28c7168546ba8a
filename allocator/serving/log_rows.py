"""Decision-log rows of a decided batch, built column-wise: one Arrow table per call.

The batch path of the facade logs R decisions without one record object per decision:
candidate ids are gathered from an Arrow column of the catalogue's ids (``take`` on the
flat candidate indices), probabilities and contexts become list columns over the batch's
CSR offsets, and constraint names come from the ``adjusted`` bitmasks. Everything comes from
inputs the facade has checked and the pipeline's own outputs, so the rows are not checked
again (the loader's column checks still apply to the parts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from allocator.decisions import Decisions
from allocator.logs import DECISION_SCHEMA, OUTCOME_SCHEMA
from allocator.registry import ArmRegistry
from allocator.serving.config import Outcome


class IdColumn:
    """The catalogue's arm ids as an Arrow string array, extended as arms are added.

    Indices are never reused and ids never change, so the column only grows; a different
    registry object (a reconfiguration, an adopted snapshot) is read again in full.
    """

    def __init__(self) -> None:
        self._registry: ArmRegistry | None = None
        self._ids = pa.array([], pa.string())

    def of(self, registry: ArmRegistry) -> pa.Array:
        if registry is not self._registry:
            self._registry, self._ids = registry, pa.array([], pa.string())
        n = len(self._ids)
        if registry.n_arms > n:
            fresh = pa.array(registry.all_ids()[n:], pa.string())
            self._ids = pa.concat_arrays([self._ids, fresh])
        return self._ids


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _adjusted_by(adjusted: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    """list<string> of the constraint names set in each request's bitmask."""
    r = adjusted.shape[0]
    bits = (adjusted[:, None] >> np.arange(max(len(names), 1))) & 1 if names else None
    if bits is None or not bits.any():
        return _lists(np.zeros(r + 1, dtype=np.int64), pa.array([], pa.string()))
    rows, cols = np.nonzero(bits)
    offsets = np.zeros(r + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=r), out=offsets[1:])
    return _lists(offsets, pa.array(np.asarray(names, dtype=object)[cols], pa.string()))


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
    attrs: Sequence[Mapping[str, str] | None], registry: ArmRegistry, ids: pa.Array,
    policy_kind: str,
) -> pa.Table:  # fmt: skip
    """The log table of a decided batch (``ids``: :meth:`IdColumn.of` the registry)."""
    assert out.decision_ids is not None and out.request_ids is not None
    r = len(out)
    arms = out.arms
    groups = pa.array(registry.groups, pa.string())
    context = (
        pa.nulls(r, DECISION_SCHEMA.field("context").type) if xs is None
        else _lists(np.arange(r + 1) * xs.shape[1], pa.array(xs.ravel()))
    )  # fmt: skip
    columns = {
        "decision_id": pa.array(out.decision_ids, pa.string()),
        "request_id": pa.array(out.request_ids, pa.string()),
        "timestamp": pa.array(out.timestamps),
        "arm_id": ids.take(pa.array(arms)),
        "arm_index": pa.array(arms),
        "group": groups.take(pa.array(registry.arm_group[arms])),
        "propensity": pa.array(out.propensities),
        "forced": pa.array(out.forced >= 0),
        "model_version": pa.array(np.full(r, out.model_version, dtype=np.int64)),
        "policy_kind": pa.array(np.full(r, policy_kind, dtype=object), pa.string()),
        "candidates": _lists(ptr, ids.take(pa.array(idx))),
        "candidate_probabilities": _lists(ptr, pa.array(out.probabilities)),
        "context": context,
        "attrs": _attrs(attrs),
        "adjusted_by": _adjusted_by(out.adjusted, out.constraint_names),
    }
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in DECISION_SCHEMA], schema=DECISION_SCHEMA
    )


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
