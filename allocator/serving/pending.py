"""Decisions waiting for feedback, and recently finished ones for duplicate detection.

Decision ids are ``<head>-<counter in hex>`` with counters issued in increasing order, so
pending decisions are rows of flat arrays in counter order (arm, time, context, head code):
registering a batch is one slice assignment, a lookup is a binary search on the counter,
the oldest pending decision is the first live row (expiry pops from the front). Rows of
decisions that got their feedback are dropped from the front as soon as they get there, and
the arrays are compacted when dead rows make up half of them, so memory follows the pending
count, not the capacity: 27 + 8·d bytes per pending decision (d context features), plus
~70 bytes per remembered finished id (a set of integers, FIFO-bounded by the capacity).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from allocator.errors import SnapshotError
from allocator.kernels import pending as kp
from allocator.kernels.entry import entry_point

_MIN_ROWS = 64


class Pending(NamedTuple):
    arm: int
    timestamp: float
    context: np.ndarray | None


def split_id(decision_id: str) -> tuple[str, int] | None:
    """``(head, counter)`` of an id ``<head>-<hex>`` in canonical lower-case hex, else None
    (such an id was never issued here)."""
    head, sep, tail = decision_id.rpartition("-")
    if not sep or not tail or len(tail) > 15:
        return None
    try:
        counter = int(tail, 16)
    except ValueError:
        return None
    return (head, counter) if f"{counter:x}" == tail else None


class Entries(NamedTuple):
    """Rows of the pending table as arrays (the bulk paths: expiry, eviction)."""

    ids: list[str]
    arms: np.ndarray
    timestamps: np.ndarray
    contexts: np.ndarray | None


class PendingTable:
    """Pending decisions by id (bounded by ``capacity``) plus a bounded memory of finished
    ids; contexts of ``n_features`` floats (None: context-free)."""

    def __init__(self, capacity: int, n_features: int | None = None) -> None:
        self.capacity = capacity
        self.n_features = n_features
        self._heads: dict[str, int] = {}
        self._head_names: list[str] = []
        self._lo = self._hi = self._live = 0
        self._alloc(_MIN_ROWS)
        self._finished: set[int] = set()
        self._finished_order: deque[int] = deque()
        self._find_row: Any = None

    def _alloc(self, rows: int) -> None:
        """Fresh arrays of ``rows`` rows holding the live window's rows at the front."""
        lo, hi, d = self._lo, self._hi, self.n_features or 0
        old = self._arrays() if hasattr(self, "_counter") else None
        self._counter = np.zeros(rows, dtype=np.int64)
        self._head = np.zeros(rows, dtype=np.int32)
        self._arm = np.zeros(rows, dtype=np.int64)
        self._t = np.zeros(rows)
        self._ctx = np.zeros((rows, d))
        self._alive = np.zeros(rows, dtype=np.bool_)
        if old is not None:
            keep = old[-1][lo:hi]
            n = int(keep.sum())
            for new, arr in zip(self._arrays(), old, strict=True):
                new[:n] = arr[lo:hi][keep]
            self._lo, self._hi = 0, n

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self._counter, self._head, self._arm, self._t, self._ctx, self._alive

    def __len__(self) -> int:
        return self._live

    @property
    def n_finished(self) -> int:
        return len(self._finished)

    @property
    def nbytes(self) -> int:
        """Bytes held by the row arrays (the finished-id set comes on top)."""
        return sum(a.nbytes for a in self._arrays())

    def _head_code(self, head: str) -> int:
        code = self._heads.get(head)
        if code is None:
            code = self._heads[head] = len(self._head_names)
            self._head_names.append(head)
        return code

    def add_many(
        self, head: str, first: int, arms: np.ndarray, times: np.ndarray,
        contexts: np.ndarray | None,
    ) -> None:  # fmt: skip
        """Register decisions ``<head>-<first + k>`` (k < n, counters above every pending
        one) in one slice; the caller then evicts :meth:`over_capacity` rows."""
        n = arms.shape[0]
        if self._hi + n > self._counter.shape[0]:
            self._alloc(max(_MIN_ROWS, 2 * (self._live + n)))
        lo, hi = self._hi, self._hi + n
        self._counter[lo:hi] = np.arange(first, first + n)
        self._head[lo:hi] = self._head_code(head)
        self._arm[lo:hi] = arms
        self._t[lo:hi] = times
        if contexts is not None and self.n_features:
            self._ctx[lo:hi] = contexts
        self._alive[lo:hi] = True
        self._hi = hi
        self._live += n

    def add_one(
        self, head: str, counter: int, arm: int, t: float, context: np.ndarray | None
    ) -> None:
        """:meth:`add_many` for one decision (``context`` (1, d) or None): element writes,
        which cost less than slice writes."""
        if self._hi == self._counter.shape[0]:
            self._alloc(max(_MIN_ROWS, 2 * (self._live + 1)))
        row = self._hi
        self._counter[row], self._head[row] = counter, self._head_code(head)
        self._arm[row], self._t[row], self._alive[row] = arm, t, True
        if context is not None and self.n_features:
            self._ctx[row] = context[0]
        self._hi = row + 1
        self._live += 1

    def _live_rows(self, stop: Callable[[slice], np.ndarray]) -> np.ndarray:
        """Live rows from the oldest up to (excluding) the first live row where ``stop``
        holds, scanning blocks of doubling size (the common case reads one block)."""
        lo, hi, end, step = self._lo, self._hi, self._lo, 64
        while end < hi:
            block = slice(end, min(hi, end + step))
            hit = self._alive[block] & stop(block)
            if hit.any():
                end += int(np.argmax(hit))
                break
            end, step = block.stop, 2 * step
        return lo + np.flatnonzero(self._alive[lo:end])

    def due_one(self, deadline: float) -> int:
        """-1 when no pending decision was made at or before ``deadline``; the oldest one's
        row when it alone was (one decision a call: the steady state of serving); -2 when
        more may have been (then :meth:`expired` says which)."""
        lo, t = self._lo, self._t
        if not self._live or t.item(lo) > deadline:
            return -1
        if lo + 1 == self._hi or (self._alive.item(lo + 1) and t.item(lo + 1) > deadline):
            return lo
        return -2

    def expired(self, deadline: float) -> np.ndarray:
        """Rows of the oldest pending decisions made at or before ``deadline``, up to the
        first one made after it (decisions arrive in nearly time order)."""
        if not self._live or self._t[self._lo] > deadline:
            return np.zeros(0, dtype=np.int64)
        return self._live_rows(lambda block: self._t[block] > deadline)

    def over_capacity(self) -> np.ndarray:
        """Rows of the oldest pending decisions beyond the capacity."""
        extra = self._live - self.capacity
        if extra <= 0:
            return np.zeros(0, dtype=np.int64)
        rows = self._live_rows(lambda block: np.zeros(block.stop - block.start, dtype=bool))
        return rows[:extra]

    def entries(self, rows: np.ndarray) -> Entries:
        """Ids, arms, times and contexts (None: context-free) of ``rows``."""
        names = self._head_names
        heads, counters = self._head[rows].tolist(), self._counter[rows].tolist()
        ids = [f"{names[h]}-{c:x}" for h, c in zip(heads, counters, strict=True)]
        ctx = self._ctx[rows] if self.n_features else None
        return Entries(ids, self._arm[rows], self._t[rows], ctx)

    def finish_rows(self, rows: np.ndarray) -> None:
        """Drop ``rows`` from the pending decisions into the finished ids."""
        keys = (self._counter[rows] << 32 | self._head[rows]).tolist()
        self._alive[rows] = False
        self._live -= rows.shape[0]
        self._finished.update(keys)
        self._finished_order.extend(keys)
        while len(self._finished_order) > self.capacity:
            self._finished.discard(self._finished_order.popleft())
        self._trim()

    def find(self, decision_id: str) -> int:
        """Row of a pending ``decision_id``, or -1 (one compiled call)."""
        key = split_id(decision_id) if isinstance(decision_id, str) else None
        code = None if key is None else self._heads.get(key[0])
        if key is None or code is None:
            return -1
        args = (self._counter, self._head, self._alive, self._lo, self._hi, key[1], code)
        if self._find_row is None:  # every argument's type is fixed: bind once
            self._find_row = entry_point(kp.find_row, args)
        return int(self._find_row(*args))

    def entry(self, row: int) -> Pending:
        """The pending decision at ``row`` (from :meth:`find`)."""
        ctx = self._ctx[row].copy() if self.n_features else None
        return Pending(self._arm.item(row), self._t.item(row), ctx)

    def id_of(self, row: int) -> str:
        """The decision id of one row (the scalar path of :meth:`entries`)."""
        return f"{self._head_names[self._head.item(row)]}-{self._counter.item(row):x}"

    def settle(self, decision_id: str | None, row: int = -1) -> None:
        """Move a pending decision (at ``row`` if known, else by id) to the finished ids."""
        if row < 0:
            row = -1 if decision_id is None else self.find(decision_id)
        if row < 0:
            return
        key = self._counter.item(row) << 32 | self._head.item(row)
        self._alive[row] = False
        self._live -= 1
        self._remember(key)
        self._trim()

    def _trim(self) -> None:
        """Skip dead rows at the front; compact when dead rows are half the window."""
        if not self._live:
            self._lo = self._hi
        alive = self._alive
        while self._lo < self._hi and not alive.item(self._lo):
            self._lo += 1
        if self._hi - self._lo > 2 * self._live + _MIN_ROWS:
            self._alloc(2 * self._live + _MIN_ROWS)

    def get(self, decision_id: str) -> Pending | None:
        row = self.find(decision_id)
        return None if row < 0 else self.entry(row)

    def set_capacity(self, capacity: int) -> None:
        """A new bound; the oldest finished ids beyond it are forgotten (the caller evicts
        :meth:`over_capacity` rows)."""
        self.capacity = capacity
        while len(self._finished_order) > capacity:
            self._finished.discard(self._finished_order.popleft())

    def _finished_key(self, decision_id: str, register: bool = False) -> int | None:
        key = split_id(decision_id)
        if key is None or not (register or key[0] in self._heads):  # unknown head: not ours
            return None
        return key[1] << 32 | self._head_code(key[0])

    def finish(self, decision_id: str) -> None:
        key = self._finished_key(decision_id, register=True)
        if key is not None:
            self._remember(key)

    def _remember(self, key: int) -> None:
        if key in self._finished:
            return
        self._finished.add(key)
        self._finished_order.append(key)
        if len(self._finished) > self.capacity:
            self._finished.discard(self._finished_order.popleft())

    def was_finished(self, decision_id: str) -> bool:
        return isinstance(decision_id, str) and self._finished_key(decision_id) in self._finished

    def to_arrays(self, n_features: int | None) -> dict[str, np.ndarray]:
        lo, hi = self._lo, self._hi
        rows = lo + np.flatnonzero(self._alive[lo:hi])
        names = self._head_names
        ids = [
            f"{names[h]}-{c:x}"
            for h, c in zip(self._head[rows].tolist(), self._counter[rows].tolist(), strict=True)
        ]
        d = n_features or 0
        finished = [f"{names[k & 0xFFFFFFFF]}-{k >> 32:x}" for k in self._finished_order]
        return {
            "pending.ids": np.array(ids, dtype=str),
            "pending.arms": self._arm[rows].copy(),
            "pending.timestamps": self._t[rows].copy(),
            "pending.contexts": self._ctx[rows].copy() if d else np.zeros((rows.size, 0)),
            "pending.finished": np.array(finished, dtype=str),
        }

    @classmethod
    def from_arrays(
        cls, capacity: int, arrays: dict[str, np.ndarray], n_arms: int, n_features: int | None,
        input_bound: float,
    ) -> PendingTable:  # fmt: skip
        """Rebuild from :meth:`to_arrays` output, checking it first (untrusted files):
        contexts beyond ``input_bound`` could not have been decided on, and their learning
        would be refused at every expiry."""
        try:
            ids, arms = arrays["pending.ids"], arrays["pending.arms"]
            times, ctx = arrays["pending.timestamps"], arrays["pending.contexts"]
            finished = arrays["pending.finished"]
        except KeyError as err:
            raise SnapshotError(f"pending array {err} is missing") from None
        k = ids.shape[0] if ids.ndim == 1 else -1
        d = n_features or 0
        if (
            ids.dtype.kind != "U" or finished.dtype.kind != "U" or finished.ndim != 1 or k < 0
            or arms.dtype != np.int64 or arms.shape != (k,)
            or times.dtype != np.float64 or times.shape != (k,)
            or ctx.dtype != np.float64 or ctx.shape != (k, d)
        ):  # fmt: skip
            raise SnapshotError("pending arrays have wrong dtypes or shapes")
        if k and (arms.min() < 0 or arms.max() >= n_arms):
            raise SnapshotError("pending.arms holds an arm index out of range")
        if not (np.isfinite(times).all() and np.isfinite(ctx).all()):
            raise SnapshotError("pending times or contexts hold NaN or inf")
        if ctx.size and not np.abs(ctx).max() <= input_bound:
            raise SnapshotError(
                f"pending.contexts hold values beyond max_abs_input = {input_bound:g}"
            )
        if k > capacity or finished.shape[0] > capacity or len(set(ids.tolist())) != k:
            raise SnapshotError("pending tables exceed their capacity or repeat an id")
        keys = [split_id(i) for i in ids.tolist()]
        counters = [key[1] for key in keys if key is not None]
        if len(counters) != k or any(b <= a for a, b in pairwise(counters)):
            raise SnapshotError(
                "pending.ids must be decision ids '<replica>-<epoch>-<hex counter>' in issue order"
            )
        table = cls(capacity, n_features)
        table._alloc(max(_MIN_ROWS, k))
        table._counter[:k] = counters
        table._head[:k] = [table._head_code(key[0]) for key in keys if key is not None]
        table._arm[:k], table._t[:k] = arms, times
        if d:
            table._ctx[:k] = ctx
        table._alive[:k] = True
        table._hi = table._live = k
        for decision_id in finished.tolist():
            table.finish(decision_id)
        return table
