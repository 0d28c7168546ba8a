"""Read a decision log back as named arrays with fixed shapes, outcomes joined.

Every ``*.parquet`` file of the directory (hidden files and temporary parts excepted) must be
an intact part written by :class:`~allocator.logs.DecisionLogWriter`: its checksum, name,
metadata, schema and rows are verified (:func:`~allocator.logs.parts.read_part`), each
writer's parts must carry consecutive sequence numbers, and the catalogue indices of
schema-3 decision parts must name ids of an intact catalogue epoch
(:mod:`allocator.logs.catalogue`); both versions read back alike. Anything else is a
:class:`~allocator.errors.LogCorrupt` naming the part, or, with ``on_damaged="skip"``, a
part left out and reported in :attr:`DecisionLog.damaged`. A writer's first and last parts
cannot be missed from the directory alone (retention deletes from the front; a crash ends
the sequence anywhere): compare ``DecisionLog.last_parts`` with what you expect.

Parts are read in file-name order, which is write order, so "first written" is well
defined: the first row of a repeated ``decision_id`` is kept, and the first outcome of a
decision is its outcome. Everything ignored is counted.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from allocator.errors import InvalidInputError, LogCorrupt
from allocator.logs.catalogue import check_catalogue
from allocator.logs.parts import Part, PartName, parse_name, read_part
from allocator.logs.schema import DECISION_SCHEMA, OUTCOME_SCHEMA

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Obj = npt.NDArray[np.object_]

_PER_ROUND = (
    "decision_id", "request_id", "timestamp", "arm_id", "arm_index", "group", "propensity",
    "forced", "model_version", "policy_kind", "click", "order", "gmv", "reward",
    "outcome_timestamp", "outcome_source",
)  # fmt: skip


@dataclass(frozen=True)
class DamagedPart:
    """A part left out of a log loaded with ``on_damaged="skip"``, or a gap in a writer's
    sequence (``part`` then names the writer and the missing numbers)."""

    part: str
    reason: str


@dataclass(frozen=True, eq=False)
class DecisionLog:
    """The decisions of a log, one row per round, with their outcomes.

    Per-round arrays have shape ``(n,)``. Candidate sets are CSR: the candidates of round
    ``i`` are ``cand_ids[cand_ptr[i]:cand_ptr[i+1]]`` with probabilities ``cand_prob`` at
    the same positions; ``adjusted_by`` likewise through ``adj_ptr`` / ``adj_names``.
    ``context`` is ``(n, d)``, with NaN rows for decisions logged without a context, or
    ``None`` if no decision had one. Outcome columns are NaN (``outcome_source`` None) for
    decisions without an outcome. Arrays are read-only. ``damaged`` lists what a
    ``on_damaged="skip"`` load left out; ``last_parts`` maps each writer (replica) to the
    sequence number of its last part found.
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
    damaged: tuple[DamagedPart, ...] = ()
    last_parts: dict[str, int] | None = None

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


def _concat(schema: pa.Schema, tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _sequence_faults(named: list[tuple[Path, PartName]]) -> list[LogCorrupt]:
    """Gaps and repeats in each writer's part numbers (from names: a damaged part still
    holds its place)."""
    by_writer: dict[str, dict[int, str]] = {}
    faults = []
    for path, name in named:
        seen = by_writer.setdefault(name.replica, {})
        if name.seq in seen:
            faults.append(
                LogCorrupt(path.name, f"repeats part number {name.seq} of {seen[name.seq]}")
            )
        seen.setdefault(name.seq, path.name)
    for replica, seen in by_writer.items():
        seqs = sorted(seen)
        for a, b in itertools.pairwise(seqs):
            if b > a + 1:
                missing = f"{a + 1}" if b == a + 2 else f"{a + 1}-{b - 1}"
                faults.append(
                    LogCorrupt(
                        f"{replica}#{missing}",
                        f"is missing: writer {replica!r} jumps from {seen[a]} to {seen[b]}",
                    )
                )
    return faults


def load_decision_log(
    directory: str | os.PathLike[str], *, on_damaged: Literal["raise", "skip"] = "raise"
) -> DecisionLog:
    """Read every part of the log in ``directory`` and join outcomes to their decisions.

    A damaged, foreign or renamed part, or a part missing from a writer's sequence, raises
    :class:`~allocator.errors.LogCorrupt` naming it; with ``on_damaged="skip"`` such parts
    are left out and listed in :attr:`DecisionLog.damaged` (with the reason) instead.
    """
    if on_damaged not in ("raise", "skip"):
        raise InvalidInputError(f"on_damaged = {on_damaged!r}: expected 'raise' or 'skip'")
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"decision log directory {directory} does not exist")
    paths = sorted(
        (p for p in directory.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    named = [(p, pn) for p in paths if (pn := parse_name(p.name)) is not None]
    faults = _sequence_faults(named)
    if faults and on_damaged == "raise":
        raise faults[0]
    skip = {f.part for f in faults}
    read: list[Part] = []
    for path in paths:
        if path.name in skip:
            continue
        try:
            read.append(read_part(path))
        except LogCorrupt as err:
            if on_damaged == "raise":
                raise
            faults.append(err)
    catalogue, bad_epochs = check_catalogue([p for p in read if p.name.kind == "catalogue"])
    if bad_epochs and on_damaged == "raise":
        raise bad_epochs[0]
    faults.extend(bad_epochs)
    decision_tables: list[pa.Table] = []
    outcome_tables: list[pa.Table] = []
    last: dict[str, int] = {}
    for part in read:
        if part.name.kind == "decisions" and part.version == 3:
            try:
                decision_tables.append(catalogue.resolve(part))
            except LogCorrupt as err:
                if on_damaged == "raise":
                    raise
                faults.append(err)
                continue
        elif part.name.kind != "catalogue":
            (decision_tables if part.name.kind == "decisions" else outcome_tables).append(
                part.table
            )
        last[part.name.replica] = max(last.get(part.name.replica, -1), part.name.seq)
    decisions = _concat(DECISION_SCHEMA, decision_tables)
    outcomes = _concat(OUTCOME_SCHEMA, outcome_tables)

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
        damaged=tuple(DamagedPart(f.part, f.reason) for f in faults),
        last_parts=last,
    )
