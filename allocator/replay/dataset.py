"""Logged bandit rounds as named arrays of fixed shapes: what every evaluator consumes.

Sources (the allocator's own decision log, foreign CSV / Parquet through a column mapping,
the scenario simulator) all produce a :class:`LoggedData`; estimators and replay evaluators
never see a source format. Candidate sets are CSR (``cand_ptr`` / ``cand_idx``) so rounds
with different eligible arms need no padding; ``None`` means every arm was eligible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from allocator.errors import InvalidInputError
from allocator.inputs import check_csr

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: how the note of a log re-sorted by time begins
RESORTED = "rows ordered by"


@dataclass(frozen=True, eq=False)
class LoggedData:
    """n logged rounds over the arms ``arm_ids`` (indices into it everywhere).

    ``actions``, ``rewards``, ``pscores`` are ``(n,)``: the logged arm, its observed reward
    and the logging policy's probability of it. ``contexts`` is ``(n, d)`` or None.
    ``cand_ptr`` ``(n+1,)`` / ``cand_idx`` ``(nnz,)`` give each round's eligible arms and,
    when the logger recorded its whole distribution, ``cand_prob`` ``(nnz,)`` the logging
    probability of each candidate (the allocator's own logs have it). ``timestamps`` (n,)
    epoch seconds and ``attrs`` (one string array (n,) per request attribute, e.g.
    ``category``) are what contract schedules and scopes read when a constrained policy is
    replayed; a round without an attribute holds ``""``. ``outcomes`` (n, 3) holds each
    round's observed events (click, order, gmv) when the source has them (the allocator's
    own logs): a policy that learns the events rather than a scalar reward
    (``factored_value``) is replayed from them. ``arm_features`` (n_arms, d_arm) are the
    arms' features from a catalogue (logs do not carry them): what the families that weigh
    arm features are built with.
    """

    arm_ids: tuple[str, ...]
    actions: I64
    rewards: F64
    pscores: F64
    arm_groups: tuple[str, ...] | None = None
    contexts: F64 | None = None
    context_names: tuple[str, ...] = ()
    timestamps: F64 | None = None
    positions: I64 | None = None
    cand_ptr: I64 | None = None
    cand_idx: I64 | None = None
    cand_prob: F64 | None = None
    attrs: Mapping[str, npt.NDArray[np.str_]] | None = None
    outcomes: F64 | None = None
    arm_features: F64 | None = None
    #: what the import did that a reader should know (arm set inferred, rows reordered)
    notes: tuple[str, ...] = ()
    #: a file's import: the data row of the file each round came from (rounds may be a
    #: position's rows, re-sorted by time), and how many data rows the file has
    source_rows: I64 | None = None
    source_size: int | None = None
    #: the materialised "every arm" candidate lists, built once (see :meth:`candidates`)
    _all_arms: tuple[I64, I64] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.actions.shape[0]
        checks: list[tuple[str, np.ndarray | None, tuple[int, ...]]] = [
            ("rewards", self.rewards, (n,)),
            ("pscores", self.pscores, (n,)),
            ("timestamps", self.timestamps, (n,)),
            ("positions", self.positions, (n,)),
            ("cand_ptr", self.cand_ptr, (n + 1,)),
            ("source_rows", self.source_rows, (n,)),
            ("outcomes", self.outcomes, (n, 3)),
        ]
        for name, column in (self.attrs or {}).items():
            checks.append((f"attrs[{name!r}]", column, (n,)))
        if self.contexts is not None:
            checks.append(("contexts", self.contexts, (n, self.contexts.shape[1])))
        for name, arr, shape in checks:
            if arr is not None and arr.shape != shape:
                raise InvalidInputError(f"{name} has shape {arr.shape}, expected {shape}")
        if (self.cand_ptr is None) != (self.cand_idx is None):
            raise InvalidInputError("cand_ptr and cand_idx come together (or both None)")
        if (self.source_rows is None) != (self.source_size is None):
            raise InvalidInputError("source_rows and source_size come together (or both None)")
        if self.cand_prob is not None and (
            self.cand_idx is None or self.cand_prob.shape != self.cand_idx.shape
        ):
            raise InvalidInputError("cand_prob needs cand_idx of the same shape")
        if self.arm_features is not None and (
            self.arm_features.ndim != 2 or self.arm_features.shape[0] != len(self.arm_ids)
        ):
            raise InvalidInputError(
                f"arm_features has shape {self.arm_features.shape}, expected "
                f"({len(self.arm_ids)}, d_arm)"
            )
        if self.arm_groups is not None and len(self.arm_groups) != len(self.arm_ids):
            raise InvalidInputError(
                f"arm_groups has {len(self.arm_groups)} entries for {len(self.arm_ids)} arms"
            )

    @property
    def n_rounds(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_arms(self) -> int:
        return len(self.arm_ids)

    def candidates(self) -> tuple[I64, I64]:
        """CSR candidate lists, materialising 'all arms' when none were logged."""
        if self.cand_ptr is not None and self.cand_idx is not None:
            return self.cand_ptr, self.cand_idx
        if self._all_arms is None:  # built once: an evaluation asks for it several times
            n, k = self.n_rounds, self.n_arms
            ptr = np.arange(n + 1, dtype=np.int64) * k
            idx = np.tile(np.arange(k, dtype=np.int64), n)
            object.__setattr__(self, "_all_arms", (ptr, idx))
        assert self._all_arms is not None
        return self._all_arms

    def shard(self, index: int, n_shards: int) -> LoggedData:
        """Contiguous slice ``index`` of ``n_shards`` (time order kept: replay is sequential)."""
        if not 0 <= index < n_shards:
            raise InvalidInputError(f"shard index {index} not in [0, {n_shards})")
        bounds = np.linspace(0, self.n_rounds, n_shards + 1).astype(np.int64)
        return self.take(int(bounds[index]), int(bounds[index + 1]))

    def take(self, start: int, stop: int) -> LoggedData:
        """Rounds ``start:stop`` as a new LoggedData (views; candidate arrays re-based)."""
        ptr = idx = prob = None
        if self.cand_ptr is not None and self.cand_idx is not None:
            lo, hi = int(self.cand_ptr[start]), int(self.cand_ptr[stop])
            ptr = self.cand_ptr[start : stop + 1]
            ptr = ptr - lo if lo else ptr  # a log's head keeps a view
            idx = self.cand_idx[lo:hi]
            prob = None if self.cand_prob is None else self.cand_prob[lo:hi]
        return self._rows(slice(start, stop), (ptr, idx, prob), ())

    def select(self, rows: I64, notes: tuple[str, ...] = ()) -> LoggedData:
        """Rounds ``rows`` (any order, e.g. a time sort) as a new LoggedData, ``notes`` added."""
        ptr = idx = prob = None
        if self.cand_ptr is not None and self.cand_idx is not None:
            sizes = np.diff(self.cand_ptr)[rows]
            ptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
            np.cumsum(sizes, out=ptr[1:])
            flat = np.repeat(self.cand_ptr[rows] - ptr[:-1], sizes) + np.arange(ptr[-1])
            idx = self.cand_idx[flat]
            prob = None if self.cand_prob is None else self.cand_prob[flat]
        return self._rows(rows, (ptr, idx, prob), notes)

    def _rows(
        self, rows: slice | I64, csr: tuple[I64 | None, I64 | None, F64 | None],
        notes: tuple[str, ...],
    ) -> LoggedData:  # fmt: skip
        """A LoggedData of ``rows`` of every per-round array, with the given candidates."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return LoggedData(
            self.arm_ids, self.actions[rows], self.rewards[rows], self.pscores[rows],
            self.arm_groups, pick(self.contexts), self.context_names, pick(self.timestamps),
            pick(self.positions), *csr,
            attrs=None if self.attrs is None else {k: v[rows] for k, v in self.attrs.items()},
            outcomes=pick(self.outcomes),
            arm_features=self.arm_features,
            notes=self.notes + notes,
            source_rows=pick(self.source_rows),
            source_size=self.source_size,
        )  # fmt: skip

    def in_time_order(self, column: str = "timestamp") -> LoggedData:
        """The rounds stably sorted by timestamp (shards are time slices, replay walks in
        time order); itself when already in order or without timestamps."""
        t = self.timestamps
        if t is None or t.shape[0] < 2:
            return self
        late = t < np.maximum.accumulate(t)
        if not late.any():
            return self
        rows = np.flatnonzero(late)
        note = (
            f"{RESORTED} {column}: {rows.size} rows were earlier than a row above "
            f"them (first data rows {rows[:5].tolist()})"
        )
        return self.select(np.argsort(t, kind="stable"), (note,))


def check_candidates(data: LoggedData) -> tuple[I64, I64]:
    """``data``'s CSR candidate lists, checked: every round has at least one valid arm."""
    ptr, idx = data.candidates()
    return check_csr(ptr, idx, data.n_arms)
