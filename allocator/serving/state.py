"""What one serving process holds, shared by the facade and its outcome side.

The facade (:mod:`allocator.serving.allocator`) and the learning of outcomes
(:mod:`allocator.serving.outcomes`) read and swap the same objects: a reconfiguration or an
adopted snapshot installs a new engine that both must see at once. They hold one
:class:`ServingState` with public fields rather than reading each other's private ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import InvalidInputError
from allocator.logs import DecisionLogWriter
from allocator.objective import Objective
from allocator.serving.catalogue import CatalogueChanges
from allocator.serving.clock import ServingClock
from allocator.serving.config import AllocatorConfig
from allocator.serving.log_rows import LoggedCatalogue
from allocator.serving.pending import PendingTable
from allocator.serving.persistence import Books
from allocator.serving.sinks import Autosaver, LogSink, check_log_fields


class ServingState:
    """The serving process's objects; every field is read under :attr:`lock`."""

    __slots__ = (
        "autosaver", "books", "catalogue", "config", "engine", "feature_index", "lock", "log",
        "log_ids", "objective", "pending", "replica", "seed", "snapshot_key", "time", "weighed",
    )  # fmt: skip

    def __init__(
        self, cfg: AllocatorConfig, seed: int, replica: str, clock: Callable[[], float],
        log_dir: str | Path | None, log_rotate_rows: int, log_flush_interval_s: float,
        snapshot_key: bytes | None,
    ) -> None:  # fmt: skip
        self.config = cfg
        self.seed = seed
        self.replica = replica
        self.snapshot_key = snapshot_key
        self.time = ServingClock(cfg.serving.time, clock, cfg.serving.max_time_jump_s)
        self.lock = threading.RLock()
        self.catalogue = CatalogueChanges(self.lock, lambda: self.engine)
        self.log: LogSink | None = None if log_dir is None else LogSink(
            DecisionLogWriter(log_dir, log_rotate_rows, log_flush_interval_s, replica=replica),
            lambda: self.config.serving.on_log_error,
        )  # fmt: skip
        self.books = Books()
        self.log_ids = LoggedCatalogue()
        self.feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}
        self.autosaver = Autosaver(lambda: self.config.serving.on_autosave_error)
        self.engine: Engine
        self.objective: Objective
        self.pending: PendingTable
        self.weighed: frozenset[str]

    def install(self, engine: Engine, pending: PendingTable) -> None:
        """Serve with ``engine`` and ``pending`` (plain assignments: nothing can fail)."""
        objective = self.config.engine.objective
        self.weighed = frozenset(
            f
            for f in ("click", "order", "gmv")
            if engine.policy.LEARNS_EVENTS or getattr(objective, f) != 0.0
        )
        self.engine = engine
        self.objective = Objective(self.config.engine.objective, engine.registry)
        self.pending = pending

    def admit(self, request_id: Any = None, attrs: Any = None) -> None:
        """Refuse a call, before any change, that the log or autosave policy would refuse
        (see :mod:`allocator.serving.sinks`), or whose log fields are bad."""
        self.autosaver.admit()
        if self.log is not None:
            self.log.admit()
            check_log_fields(request_id, attrs)

    def commit_time(self, mode: str) -> None:
        self.time.commit(mode)
        self.books.time_mode = mode

    def count(self, name: str) -> None:
        with self.lock:
            self.books.counts[name] += 1

    def time_refused(self, t: float) -> bool:
        return t < self.books.last_t - self.config.serving.max_clock_skew_s

    def check_times(self, times: np.ndarray) -> None:
        """:meth:`check_time` of a batch's times in order, each against the latest before
        it (the batch's own earlier requests included), as the same requests decided one
        by one would be."""
        latest = np.maximum.accumulate(np.concatenate(([self.books.last_t], times[:-1])))
        late = np.flatnonzero(times < latest - self.config.serving.max_clock_skew_s)
        if late.size:
            i = int(late[0])
            raise InvalidInputError(
                f"requests[{i}]: timestamp {float(times[i])} is "
                f"{float(latest[i] - times[i]):.3f} s before the latest decision: more than "
                f"max_clock_skew_s = {self.config.serving.max_clock_skew_s}"
            )

    def check_time(self, t: float) -> None:
        skew = self.config.serving.max_clock_skew_s
        if self.time_refused(t):
            raise InvalidInputError(
                f"timestamp {t} is {self.books.last_t - t:.3f} s before the latest decision: "
                f"more than max_clock_skew_s = {skew}"
            )
