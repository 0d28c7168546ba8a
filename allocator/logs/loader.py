"""Read a decision log back as named arrays with fixed shapes, outcomes joined.

Every ``*.parquet`` file of the directory (hidden files and temporary parts excepted) must be
a part written by :class:`~allocator.logs.DecisionLogWriter`; anything else is an error
rather than silently skipped data. Parts are read in file-name order, which is write order,
so "first written" is well defined: the first row of a repeated ``decision_id`` is kept,
and the first outcome of a decision is its outcome. Everything ignored is counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from allocator.errors import InvalidInputError
from allocator.logs.schema import KINDS, META_KIND, META_VERSION, SCHEMA_VERSION, SCHEMAS, Kind

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Obj = npt.NDArray[np.object_]

_PER_ROUND = (
    "decision_id", "request_id", "timestamp", "arm_id", "arm_index", "group", "propensity",
    "forced", "model_version", "policy_kind", "click", "order", "gmv", "reward",
    "outcome_timestamp", "outcome_source",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class DecisionLog:
    """The decisions of a log, one row per round, with their outcomes.

    Per-round arrays have shape ``(n,)``. Candidate sets are CSR: the candidates of round
    ``i`` are ``cand_ids[cand_ptr[i]:cand_ptr[i+1]]`` with probabilities ``cand_prob`` at
    the same positions; ``adjusted_by`` likewise through ``adj_ptr`` / ``adj_names``.
    ``context`` is ``(n, d)``, with NaN rows for decisions logged without a context, or
    ``None`` if no decision had one. Outcome columns are NaN (``outcome_source`` None) for
    decisions without an outcome. Arrays are read-only.
    """

    decision_id: Obj
    request_id: Obj
    timestamp: F64
    arm_id: Obj
    arm_index: I64
    group: Obj
    propensity: F64
    forced: npt.NDArray[np.bool_]
    model_version: I64
    policy_kind: Obj
    cand_ptr: I64
    cand_ids: Obj
    cand_prob: F64
    context: F64 | None
    attrs: list[dict[str, str]]
    adj_ptr: I64
    adj_names: Obj
    click: F64
    order: F64
    gmv: F64
    reward: F64
    outcome_timestamp: F64
    outcome_source: Obj
    duplicate_outcomes: int = 0
    orphan_outcomes: int = 0
    duplicate_decisions: int = 0

    def __post_init__(self) -> None:
        n = len(self.decision_id)
        for name in _PER_ROUND:
            if getattr(self, name).shape != (n,):
                raise InvalidInputError(f"{name} has shape {getattr(self, name).shape}, ({n},)")
        for ptr, values in (("cand_ptr", "cand_ids"), ("adj_ptr", "adj_names")):
            p = getattr(self, ptr)
            if p.shape != (n + 1,) or p[0] != 0 or p[-1] != len(getattr(self, values)):
                raise InvalidInputError(f"{ptr} is not a CSR pointer over {values} of {n} rows")
        if self.cand_prob.shape != self.cand_ids.shape:
            raise InvalidInputError(
                f"cand_prob has shape {self.cand_prob.shape}, cand_ids {self.cand_ids.shape}"
            )
        if self.context is not None and (self.context.ndim != 2 or len(self.context) != n):
            raise InvalidInputError(f"context has shape {self.context.shape}, expected ({n}, d)")
        if len(self.attrs) != n:
            raise InvalidInputError(f"attrs has {len(self.attrs)} rows, expected {n}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    def __len__(self) -> int:
        return len(self.decision_id)

    @property
    def n_features(self) -> int:
        """Context dimension (0 without context)."""
        return 0 if self.context is None else int(self.context.shape[1])

    @property
    def has_outcome(self) -> npt.NDArray[np.bool_]:
        """Rounds whose outcome was logged."""
        return ~np.isnan(self.reward)


def _read_part(path: Path) -> tuple[Kind, pa.Table]:
    try:
        with pq.ParquetFile(path) as part:
            kind = _check_schema(path, part.schema_arrow)
            table = part.read()
    except (pa.ArrowException, OSError) as err:
        raise InvalidInputError(f"log part {path} is corrupt or unreadable: {err}") from None
    return kind, table.replace_schema_metadata(None)


def _check_schema(path: Path, schema: pa.Schema) -> Kind:
    meta = schema.metadata or {}
    kind_bytes, version = meta.get(META_KIND), meta.get(META_VERSION)
    kind = next((k for k in KINDS if k.encode() == kind_bytes), None)
    if kind is None or version is None:
        raise InvalidInputError(
            f"{path} is not a decision log part: its Parquet metadata has "
            f"{META_KIND.decode()} = {kind_bytes!r} and {META_VERSION.decode()} = {version!r}, "
            f"expected one of {list(KINDS)} and {SCHEMA_VERSION}"
        )
    if version != str(SCHEMA_VERSION).encode():
        raise InvalidInputError(
            f"{path} has schema version {version.decode(errors='replace')}, "
            f"this loader reads version {SCHEMA_VERSION}"
        )
    if not path.name.startswith(f"{kind}-"):
        raise InvalidInputError(f"{path} holds {kind} but is not named {kind}-*.parquet")
    expected = SCHEMAS[kind]
    if not schema.equals(expected, check_metadata=False):
        differ = [
            f.name
            for f in expected
            if f.name not in schema.names or not schema.field(f.name).equals(f)
        ] + [name for name in schema.names if name not in expected.names]
        raise InvalidInputError(
            f"{path} does not match the {kind} schema version {SCHEMA_VERSION}: "
            f"fields {differ} differ"
        )
    return kind


def _csr(column: pa.ChunkedArray) -> tuple[I64, npt.NDArray[Any]]:
    lists = column.combine_chunks()
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(pc.list_value_length(lists).to_numpy(zero_copy_only=False), out=ptr[1:])
    return ptr, lists.flatten().to_numpy(zero_copy_only=False)


def _context(decisions: pa.Table) -> F64 | None:
    lists = decisions.column("context").combine_chunks()
    valid = lists.is_valid().to_numpy(zero_copy_only=False)
    if not valid.any():
        return None
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    d = int(lengths[valid][0])
    bad = valid & (lengths != d)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        first = int(np.flatnonzero(valid)[0])
        ids = decisions.column("decision_id")
        raise InvalidInputError(
            f"context of decision {ids[i].as_py()!r} has {lengths[i]} features, but that of "
            f"decision {ids[first].as_py()!r} has {d}: the log mixes context lengths"
        )
    out = np.full((len(lists), d), np.nan)
    values = lists.flatten().to_numpy(zero_copy_only=False)
    out[valid] = values.reshape(int(valid.sum()), d)
    return out


def _concat(kind: Kind, tables: list[pa.Table]) -> pa.Table:
    schema = SCHEMAS[kind]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def load_decision_log(directory: str | os.PathLike[str]) -> DecisionLog:
    """Read every part of the log in ``directory`` and join outcomes to their decisions."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"decision log directory {directory} does not exist")
    paths = sorted(
        (p for p in directory.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    tables: dict[Kind, list[pa.Table]] = {kind: [] for kind in KINDS}
    for path in paths:
        kind, table = _read_part(path)
        tables[kind].append(table)
    decisions = _concat("decisions", tables["decisions"])
    outcomes = _concat("outcomes", tables["outcomes"])

    ids = decisions.column("decision_id").combine_chunks()
    first = pc.index_in(ids, value_set=ids).to_numpy(zero_copy_only=False)
    keep = first == np.arange(len(ids))
    duplicate_decisions = int(len(ids) - keep.sum())
    if duplicate_decisions:
        decisions = decisions.filter(pa.array(keep))
        ids = decisions.column("decision_id").combine_chunks()
    n = len(ids)

    target = pc.fill_null(pc.index_in(outcomes.column("decision_id"), value_set=ids), -1).to_numpy(
        zero_copy_only=False
    )
    matched = np.flatnonzero(target >= 0)
    joined, first_of = np.unique(target[matched], return_index=True)
    rows = matched[first_of]  # outcome row of each joined decision: its first outcome

    def outcome(name: str) -> F64:
        out = np.full(n, np.nan)
        out[joined] = outcomes.column(name).to_numpy()[rows]
        return out

    source = np.full(n, None, dtype=object)
    source[joined] = outcomes.column("source").to_numpy()[rows]
    cand_ptr, cand_ids = _csr(decisions.column("candidates"))
    adj_ptr, adj_names = _csr(decisions.column("adjusted_by"))

    def column(name: str) -> npt.NDArray[Any]:
        return decisions.column(name).to_numpy()

    return DecisionLog(
        decision_id=column("decision_id"),
        request_id=column("request_id"),
        timestamp=column("timestamp"),
        arm_id=column("arm_id"),
        arm_index=column("arm_index"),
        group=column("group"),
        propensity=column("propensity"),
        forced=column("forced"),
        model_version=column("model_version"),
        policy_kind=column("policy_kind"),
        cand_ptr=cand_ptr,
        cand_ids=cand_ids,
        cand_prob=_csr(decisions.column("candidate_probabilities"))[1],
        context=_context(decisions),
        attrs=[dict(pairs) for pairs in decisions.column("attrs").to_pylist()],
        adj_ptr=adj_ptr,
        adj_names=adj_names,
        click=outcome("click"),
        order=outcome("order"),
        gmv=outcome("gmv"),
        reward=outcome("reward"),
        outcome_timestamp=outcome("timestamp"),
        outcome_source=source,
        duplicate_outcomes=int(len(matched) - len(joined)),
        orphan_outcomes=int(len(target) - len(matched)),
        duplicate_decisions=duplicate_decisions,
    )
