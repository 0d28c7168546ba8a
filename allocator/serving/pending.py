"""Decisions waiting for feedback, and recently finished ones for duplicate detection.

Both tables are insertion-ordered and bounded. Decisions arrive in (nearly) time order, so
the oldest pending decision is always first: expiring is a pop from the front, O(1) per
expired decision.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from allocator.errors import SnapshotError


class Pending(NamedTuple):
    arm: int
    timestamp: float
    context: np.ndarray | None


class PendingTable:
    """Pending decisions by id (bounded) plus a bounded memory of finished ids."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, decision_id: str, entry: Pending) -> tuple[str, Pending] | None:
        """Register a decision; returns the evicted oldest one when over capacity."""
        self._pending[decision_id] = entry
        if len(self._pending) > self.capacity:
            return self._pending.popitem(last=False)
        return None

    def pop_oldest_over_capacity(self) -> tuple[str, Pending] | None:
        """The oldest pending decision while more wait than the capacity (after a shrink)."""
        while len(self._finished) > self.capacity:
            self._finished.popitem(last=False)
        if len(self._pending) > self.capacity:
            return self._pending.popitem(last=False)
        return None

    def get(self, decision_id: str) -> Pending | None:
        return self._pending.get(decision_id)

    def pop(self, decision_id: str) -> Pending | None:
        return self._pending.pop(decision_id, None)

    def finish(self, decision_id: str) -> None:
        self._finished[decision_id] = None
        if len(self._finished) > self.capacity:
            self._finished.popitem(last=False)

    def was_finished(self, decision_id: str) -> bool:
        return decision_id in self._finished

    def pop_expired(self, deadline: float) -> tuple[str, Pending] | None:
        """The oldest pending decision if it was made at or before ``deadline``."""
        if not self._pending:
            return None
        decision_id, entry = next(iter(self._pending.items()))
        if entry.timestamp > deadline:
            return None
        del self._pending[decision_id]
        return decision_id, entry

    def to_arrays(self, n_features: int | None) -> dict[str, np.ndarray]:
        ids = list(self._pending)
        entries = list(self._pending.values())
        d = n_features or 0
        ctx = np.zeros((len(entries), d))
        for i, e in enumerate(entries):
            if e.context is not None:
                ctx[i] = e.context
        return {
            "pending.ids": np.array(ids, dtype=str),
            "pending.arms": np.array([e.arm for e in entries], dtype=np.int64),
            "pending.timestamps": np.array([e.timestamp for e in entries], dtype=np.float64),
            "pending.contexts": ctx,
            "pending.finished": np.array(list(self._finished), dtype=str),
        }

    @classmethod
    def from_arrays(
        cls, capacity: int, arrays: dict[str, np.ndarray], n_arms: int, n_features: int | None
    ) -> PendingTable:
        """Rebuild from :meth:`to_arrays` output, checking it first (untrusted files)."""
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
        if k > capacity or finished.shape[0] > capacity or len(set(ids.tolist())) != k:
            raise SnapshotError("pending tables exceed their capacity or repeat an id")
        table = cls(capacity)
        for i, decision_id in enumerate(ids.tolist()):
            table._pending[decision_id] = Pending(
                int(arms[i]), float(times[i]), ctx[i].copy() if n_features else None
            )
        for decision_id in finished.tolist():
            table._finished[decision_id] = None
        return table
