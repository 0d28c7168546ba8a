"""The calls that change what a serving allocator is, not what it decides: its arm
catalogue, configuration, fleet learning (deltas, published snapshots), metrics and saves.

Split from :mod:`.allocator`; every call here takes the facade's lock (and the catalogue
mutex where arms may change), builds what it installs outside the state, and commits by
plain assignments, so an error leaves the running allocator untouched.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import SnapshotError
from allocator.registry import ArmRegistry
from allocator.serving.catalogue import CatalogueChanges
from allocator.serving.config import AllocatorConfig, as_allocator_config
from allocator.serving.pending import PendingTable
from allocator.serving.persistence import (
    Books,
    allocator_snapshot,
    published_size_bound,
    read_published,
)
from allocator.serving.sinks import Autosaver, LogSink, log_metrics
from allocator.serving.staging import stage_engine
from allocator.snapshot import write_snapshot


class LifecycleCalls:
    """Catalogue, configuration, fleet, metrics and snapshot calls of
    :class:`~allocator.serving.Allocator` (its only host), which sets up the attributes
    below and provides ``registry``, ``policy``, ``_install`` and ``_learn_defaults``."""

    config: AllocatorConfig
    seed: int
    replica: str
    _lock: threading.RLock
    _engine: Engine
    _books: Books
    _pending: PendingTable
    _catalogue: CatalogueChanges
    _log: LogSink | None
    _autosaver: Autosaver
    _feature_index: dict[str, int]
    _snapshot_key: bytes | None

    if TYPE_CHECKING:

        @property
        def registry(self) -> ArmRegistry: ...

        @property
        def policy(self) -> Any: ...

        def _install(self, engine: Engine, pending: PendingTable) -> None: ...

        def _learn_defaults(self, rows: np.ndarray, log_times: np.ndarray) -> None: ...

    def set_autosave(self, path: str | Path | None, every_s: float = 300.0) -> None:
        """Save to ``path`` (atomically) at most every ``every_s`` seconds of traffic time;
        a failure follows ``serving.on_autosave_error`` (:mod:`allocator.serving.sinks`)."""
        with self._lock:
            self._autosaver.set(path, every_s)

    # ------------------------------------------------------------------- catalogue
    def add_arms(self, ids: Sequence[str], group: str, features: Any = None) -> np.ndarray:
        """Add merchants (or partners) while serving; returns their indices.

        New arms start from their group's prior and can be chosen by the next decision.
        Cost is proportional to the arms added; a growth of the per-arm arrays is copied in
        slices with decisions served between them (see :mod:`allocator.serving.catalogue`).
        All ids and features are checked before any arm is added.
        """
        return self._catalogue.add(ids, group, features)

    def retire_arms(self, ids: Sequence[str]) -> np.ndarray:
        """Stop serving ``ids`` from the next decision on (learned state is kept)."""
        return self._catalogue.retire(ids)

    # ------------------------------------------------------------- configuration
    def reconfigure(self, config: AllocatorConfig | Mapping[str, Any] | str | Path) -> None:
        """Swap in a new configuration atomically, keeping what was learned.

        A staged engine (arm changes, new hyper-parameters adopting the running statistics,
        compiled contracts with unchanged constraints' queues) is built, then installed by
        plain assignments. Any error leaves the running allocator untouched. For adding or
        retiring arms while serving, :meth:`add_arms` / :meth:`retire_arms` are cheaper.
        """
        cfg = as_allocator_config(config)
        with self._catalogue.mutex, self._lock:
            engine = stage_engine(self._engine, self.config, cfg, self.seed)
            # commit: nothing below can fail
            self.config = cfg
            self._install(engine, self._pending)
            self._feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}
            self._pending.set_capacity(cfg.serving.pending_capacity)
            t = self._books.last_t if math.isfinite(self._books.last_t) else 0.0
            rows = self._pending.over_capacity()
            if rows.size:
                self._books.counts["evicted"] += rows.size
                self._learn_defaults(rows, np.full(rows.size, t))

    # ---------------------------------------------------------------- fleet learning
    def export_delta(self) -> dict[str, np.ndarray]:
        """Sufficient statistics learned since the previous export (send to the learner)."""
        with self._lock:
            return self.policy.export_delta()

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Fold a replica's delta into this (learner) allocator's posterior (checked whole
        before anything changes)."""
        with self._catalogue.mutex, self._lock:
            self.policy.merge(delta)

    def load_published(self, path: str | Path, *, max_bytes: int | None = None) -> None:
        """Adopt a learner's published snapshot without pausing decisions.

        The file is read and the learner's engine rebuilt outside the lock; only the swap
        happens under it. This replica keeps its own decision stream, pending decisions and
        contract queues, and its next :meth:`export_delta` starts from the adopted state.
        With a ``snapshot_key`` the file must carry the learner's tag for that key. Files
        over ``max_bytes`` (default: :func:`published_size_bound` of this replica) are
        refused unread.
        """
        with self._lock:
            mine = self.registry.all_ids()
            bound = published_size_bound(self._engine) if max_bytes is None else max_bytes
        published, ids = read_published(path, self.config, self.seed, self._snapshot_key, bound)
        if ids[: len(mine)] != mine[: len(ids)]:
            raise SnapshotError(f"published snapshot {path} has a different arm catalogue")
        published.policy.export_delta()  # the adopted state is the new delta baseline
        with self._catalogue.mutex, self._lock:
            published.policy.state.stream[:] = self.policy.state.stream
            published.contracts = self._engine.contracts
            published.contracts.reserve(published.registry.capacity, 0)
            self._install(published, self._pending)

    # --------------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        """Counters and gauges, including each constraint's share against its target."""
        with self._lock:
            out: dict[str, Any] = dict(self._books.counts)
            out["pending"] = len(self._pending)
            out["model_version"] = self.policy.version
            out["arms_active"] = int(self.registry.active.sum())
            out["catalogue_max_lock_s"], out["catalogue_max_lock_cpu_s"] = (
                self._catalogue.longest_hold
            )
            reports = self._engine.report()
            out["backstops"] = sum(r.backstops for r in reports)
            out["constraints"] = {r.name: dataclasses.asdict(r) for r in reports}
            out.update(log_metrics(self._log))
            out.update(self._autosaver.metrics())
            return out

    # ------------------------------------------------------------------- snapshots
    def snapshot_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Every array and meta value needed to resume exactly where this allocator is."""
        with self._lock:
            return allocator_snapshot(
                self._engine, self._pending, self.config, self.seed, self.replica, self._books
            )

    def save(self, path: str | Path) -> None:
        """Write the whole state atomically (exclusive temp file, fsync, rename), tagged
        with the ``snapshot_key`` if one is configured."""
        with self._lock:  # the model's arrays are written live: no copy of the state
            arrays, meta = allocator_snapshot(
                self._engine, self._pending, self.config, self.seed, self.replica, self._books,
                copy=False,
            )  # fmt: skip
            write_snapshot(path, arrays, meta, self._snapshot_key)
            self._books.counts["saves"] += 1
            self._autosaver.saved()
