"""The id catalogue of schema-3 logs: which arm id and group each (epoch, index) names.

A registry numbers arms densely and never reuses an index, so within one registry's life
an index names one id. Across registries it need not: a reconfiguration from another
config, a restored snapshot, a restart or another replica may number the same ids
differently. Catalogue rows therefore carry an *epoch*, a random 63-bit token a writer
draws whenever it starts logging for a numbering it cannot extend, and decision rows name
their epoch. The loader checks every epoch whole (indices ``0..n-1`` each exactly once, no
id twice; a row repeated whole, as a writer writes again what a lost directory took, counts
once) and resolves decisions back to the id strings of version 2, so every reader of
:class:`~allocator.logs.DecisionLog` sees one shape whichever version was written.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from allocator.errors import LogCorrupt
from allocator.logs.parts import Part
from allocator.logs.schema import CATALOGUE_SCHEMA, DECISION_SCHEMA

I64 = npt.NDArray[np.int64]


def new_epoch() -> int:
    """A fresh epoch token (random, so epochs of different writers never meet)."""
    return secrets.randbits(63)


def catalogue_rows(epoch: int, start: int, ids: pa.Array, groups: pa.Array) -> pa.Table:
    """Catalogue rows naming ``ids`` (with their ``groups``) indices ``start, start+1, ...``
    of ``epoch``."""
    n = len(ids)
    return pa.Table.from_arrays(
        [
            pa.array(np.full(n, epoch, dtype=np.int64)),
            pa.array(np.arange(start, start + n, dtype=np.int32)),
            ids.cast(pa.string()),
            groups.cast(pa.string()),
        ],
        schema=CATALOGUE_SCHEMA,
    )


@dataclass(frozen=True, eq=False)
class Catalogue:
    """Every checked epoch: epoch ``epochs[e]`` names ``ids[start[e] + i]`` by index ``i``
    for ``i < start[e+1] - start[e]``."""

    epochs: I64
    start: I64
    ids: pa.Array
    groups: pa.Array

    def resolve(self, part: Part) -> pa.Table:
        """``part``'s indexed decision rows with their ids and groups (the version-2
        schema); :class:`LogCorrupt` naming the part, column and row of an index that no
        checked epoch names."""
        t = part.table
        file = part.file
        epoch = t.column("catalogue").to_numpy()
        code = np.zeros(len(epoch), dtype=np.int64)
        known = np.zeros(len(epoch), dtype=bool)
        if len(self.epochs):
            code = np.minimum(np.searchsorted(self.epochs, epoch), len(self.epochs) - 1)
            known = self.epochs[code] == epoch
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            raise LogCorrupt(
                file, f"catalogue[{row}] = {int(epoch[row])}: no intact catalogue part of this "
                "epoch (missing, damaged or deleted)",
            )  # fmt: skip
        size = (self.start[1:] - self.start[:-1])[code]
        base = self.start[:-1][code]
        arm = t.column("arm_index").to_numpy().astype(np.int64)
        lists = pa.chunked_array(t.column("candidate_indices")).combine_chunks()
        rows = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
        cand = pc.list_flatten(lists).to_numpy().astype(np.int64)
        for name, values, row_of in (("arm_index", arm, None), ("candidate_indices", cand, rows)):
            r = np.arange(len(values)) if row_of is None else row_of
            outside = (values < 0) | (values >= size[r])
            if outside.any():
                k = int(np.flatnonzero(outside)[0])
                raise LogCorrupt(
                    file, f"{name}[{int(r[k])}] = {int(values[k])}: outside catalogue epoch "
                    f"{int(epoch[r[k]])}, which names {int(size[r[k]])} ids",
                )  # fmt: skip
        chosen = pa.array(base + arm)
        offsets = np.zeros(len(t) + 1, dtype=np.int32)
        np.cumsum(pc.list_value_length(lists).to_numpy(zero_copy_only=False), out=offsets[1:])
        columns = {
            "arm_id": self.ids.take(chosen),
            "arm_index": pa.array(arm),
            "group": self.groups.take(chosen),
            "candidates": pa.ListArray.from_arrays(
                pa.array(offsets), self.ids.take(pa.array(base[rows] + cand))
            ),
        }
        return pa.Table.from_arrays(
            [
                (columns[f.name] if f.name in columns else t.column(f.name)).cast(f.type)
                for f in DECISION_SCHEMA
            ],
            schema=DECISION_SCHEMA,
        )


def _repeated_rows(epoch: I64, index: I64, ids: pa.Array, groups: pa.Array) -> np.ndarray:
    """Rows (sorted by epoch, then index) equal in every column to the row before: the
    same naming written twice (the writer writes again what a replaced directory lost)."""
    again = np.zeros(len(epoch), dtype=bool)
    if len(epoch) > 1:
        same_key = (epoch[1:] == epoch[:-1]) & (index[1:] == index[:-1])
        same_id = pc.fill_null(pc.equal(ids[1:], ids[:-1]), False).to_numpy(zero_copy_only=False)
        same_group = pc.fill_null(pc.equal(groups[1:], groups[:-1]), False).to_numpy(
            zero_copy_only=False
        )
        again[1:] = same_key & same_id & same_group
    return again


def check_catalogue(parts: list[Part]) -> tuple[Catalogue, list[LogCorrupt]]:
    """The catalogue of ``parts`` (catalogue parts), with one fault per epoch that is not a
    numbering (an index twice or missing, an id twice); those epochs are left out."""
    if not parts:
        empty = pa.array([], pa.string())
        return Catalogue(np.zeros(0, np.int64), np.zeros(1, np.int64), empty, empty), []
    table = pa.concat_tables([p.table for p in parts])
    source = np.repeat(np.arange(len(parts)), [p.table.num_rows for p in parts])
    epoch = table.column("epoch").to_numpy()
    index = table.column("arm_index").to_numpy().astype(np.int64)
    order = np.lexsort((index, epoch))
    epoch, index, source = epoch[order], index[order], source[order]
    ids = table.column("arm_id").combine_chunks().take(pa.array(order))
    groups = table.column("group").combine_chunks().take(pa.array(order))
    again = _repeated_rows(epoch, index, ids, groups)  # a part a writer wrote again
    if again.any():
        mask = pa.array(~again)
        epoch, index, source = epoch[~again], index[~again], source[~again]
        ids, groups = ids.filter(mask), groups.filter(mask)
    epochs, first, counts = np.unique(epoch, return_index=True, return_counts=True)
    code = np.repeat(np.arange(len(epochs)), counts)
    position = np.arange(len(epoch)) - first[code]
    bad = np.zeros(len(epochs), dtype=bool)
    faults: list[LogCorrupt] = []

    def fault(e: int, row: int, reason: str) -> None:
        if not bad[e]:
            bad[e] = True
            faults.append(LogCorrupt(parts[source[row]].file, f"catalogue epoch {epochs[e]}: "
                                     + reason))  # fmt: skip

    misplaced = np.flatnonzero(index != position)
    for row in misplaced[np.unique(code[misplaced], return_index=True)[1]]:
        e = int(code[row])
        if row > first[e] and index[row] == index[row - 1]:
            named = dict.fromkeys((ids[row - 1].as_py(), ids[row].as_py()))
            fault(e, row, f"index {index[row]} is listed twice, naming {list(named)}")
        else:
            fault(e, row, f"index {position[row]} is missing (the epoch has {counts[e]} rows)")
    keyed = pa.table({"code": code, "arm_id": ids, "row": np.arange(len(code))})
    repeats = keyed.group_by(["code", "arm_id"]).aggregate([("row", "count"), ("row", "min")])
    repeats = repeats.filter(pc.greater(repeats.column("row_count"), 1))
    rows = np.sort(repeats.column("row_min").to_numpy())
    for row in rows[np.unique(code[rows], return_index=True)[1]]:
        arm_id = ids[int(row)].as_py()
        fault(int(code[row]), int(row), f"arm_id {arm_id!r} is listed twice: ids must be unique")
    keep = ~bad[code]
    if not keep.all():
        epochs, counts = epochs[~bad], counts[~bad]
        mask = pa.array(keep)
        ids, groups = ids.filter(mask), groups.filter(mask)
    start = np.zeros(len(epochs) + 1, dtype=np.int64)
    np.cumsum(counts, out=start[1:])
    return Catalogue(epochs.astype(np.int64), start, ids, groups), faults
