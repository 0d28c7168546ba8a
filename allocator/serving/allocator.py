"""The embedded serving facade: ids, the lock, pending feedback, the decision log, autosave.

Decisions and learning are the engine's (:class:`~allocator.engine.Engine`); this layer
turns arm ids into indices, issues decision ids, waits for delayed feedback, logs, saves.
This module holds construction and the decision calls; feedback is
:mod:`allocator.serving.feedback`'s, catalogue, configuration, fleet and snapshot calls are
:mod:`allocator.serving.lifecycle`'s (mixins of the one :class:`Allocator` class).

Locking model: one re-entrant mutex per allocator serialises every operation that reads or
writes learned state (decide, update, expiry, refresh, save, reconfigure, merge). Work that
needs no state (parsing outcomes, reading a snapshot file, compiling a new configuration)
happens before the lock is taken, and the numba kernels run without the GIL. Growing the
arm catalogue copies the per-arm arrays in slices, taking the lock per slice, so decisions
keep flowing while a large catalogue grows (:meth:`Allocator.add_arms`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from allocator.decisions import Decision, Decisions
from allocator.engine import Engine, given_id
from allocator.errors import InvalidInputError, brief
from allocator.logs import DecisionLogWriter, DecisionRecord
from allocator.objective import Objective
from allocator.registry import ArmRegistry
from allocator.serving.arms import build_catalogue
from allocator.serving.catalogue import CatalogueChanges
from allocator.serving.clock import ServingClock
from allocator.serving.config import AllocatorConfig, as_allocator_config
from allocator.serving.feedback import FeedbackCalls
from allocator.serving.fused import decide_fused
from allocator.serving.lifecycle import LifecycleCalls
from allocator.serving.log_rows import LoggedCatalogue, decision_rows
from allocator.serving.pending import PendingTable
from allocator.serving.persistence import Books, read_allocator_snapshot
from allocator.serving.requests import request_batch
from allocator.serving.sinks import Autosaver, LogSink, check_log_fields
from allocator.snapshot import DEFAULT_MAX_BYTES, load_key


class Allocator(FeedbackCalls, LifecycleCalls):
    """Thread-safe, snapshot-able traffic allocator for one serving process."""

    def __init__(
        self,
        config: AllocatorConfig | Mapping[str, Any] | str | Path,
        seed: int = 0,
        *,
        replica: str = "r0",
        clock: Callable[[], float] = time.time,
        log_dir: str | Path | None = None,
        log_rotate_rows: int = 100_000,
        autosave_path: str | Path | None = None,
        autosave_every_s: float = 300.0,
        log_flush_interval_s: float = 1.0,
        snapshot_key: bytes | str | Path | None = None,
    ) -> None:
        cfg = as_allocator_config(config)
        key = load_key(snapshot_key)
        registry, features = build_catalogue(cfg)
        engine = Engine(cfg.engine.policy, cfg.constraints, registry, seed, features)
        self._setup(cfg, seed, replica, clock, log_dir, log_rotate_rows, log_flush_interval_s)
        self._snapshot_key = key
        self.set_autosave(autosave_path, autosave_every_s)
        self._install(engine, PendingTable(cfg.serving.pending_capacity, engine.policy.n_features))

    def _setup(
        self, cfg: AllocatorConfig, seed: int, replica: str, clock: Callable[[], float],
        log_dir: str | Path | None, log_rotate_rows: int, log_flush_interval_s: float,
    ) -> None:  # fmt: skip
        self.config = cfg
        self.seed = seed
        self.replica = replica
        self._time = ServingClock(cfg.serving.time, clock, cfg.serving.max_time_jump_s)
        self._lock = threading.RLock()
        self._catalogue = CatalogueChanges(self._lock, lambda: self._engine)
        self._log = None if log_dir is None else LogSink(
            DecisionLogWriter(log_dir, log_rotate_rows, log_flush_interval_s, replica=replica),
            lambda: self.config.serving.on_log_error,
        )  # fmt: skip
        self._books = Books()
        self._log_ids = LoggedCatalogue()
        self._feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}
        self._autosaver = Autosaver(lambda: self.config.serving.on_autosave_error)

    def _install(self, engine: Engine, pending: PendingTable) -> None:
        objective = self.config.engine.objective
        self._weighed = frozenset(
            f
            for f in ("click", "order", "gmv")
            if engine.policy.LEARNS_EVENTS or getattr(objective, f) != 0.0
        )
        self._engine = engine
        self._objective = Objective(self.config.engine.objective, engine.registry)
        self._pending = pending

    # ------------------------------------------------------------------ properties
    @property
    def registry(self) -> ArmRegistry:
        return self._engine.registry

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def policy(self) -> Any:
        return self._engine.policy

    def warmup(self) -> None:
        """Compile every kernel of the decision and update paths now, not on first traffic."""
        with self._lock:
            arrays, meta = self._engine.export_state()
            reg = self.registry
            cand = np.flatnonzero(reg.active[: reg.n_arms])[:2]
            x = None if self.policy.n_features is None else np.zeros(self.policy.n_features)
            t0 = self._books.last_t if math.isfinite(self._books.last_t) else 0.0
            d = self._engine.decide(cand, x, None, t0)
            ids = [reg.arm_id(int(a)) for a in cand]
            for given in (ids, np.array(ids)):  # both query forms of the fused call
                decide_fused(self._engine, given, x, None)
            # through the outcome entry points, which every family accepts (a factored
            # family refuses a bare scalar reward)
            self.policy.learn_outcome(d.arm_index, 0.0, 0.0, 0.0, 0.0, x)
            xs = None if x is None else x[None, :]
            self._engine.decide_batch(np.array([0, cand.size]), cand, xs, [t0])
            zero = np.zeros(1)
            self.policy.learn_outcomes(cand[:1], zero, zero, zero, zero, xs)
            self.policy.refresh()
            self._engine = Engine.restore(
                self.config.engine.policy, self.config.constraints, self.seed, arrays, meta
            )
            self._objective = Objective(self.config.engine.objective, self._engine.registry)

    # ------------------------------------------------------------------- decisions
    def decide(
        self,
        candidates: Sequence[str] | np.ndarray,
        context: Any = None,
        attrs: Mapping[str, str] | None = None,
        timestamp: Any = None,
        request_id: str | None = None,
    ) -> Decision:
        """Choose a destination among ``candidates`` (arm ids, or registry indices).

        ``context`` is a float array, or a mapping resolved by ``serving.feature_names``.
        Raises a typed :class:`~allocator.AllocatorError` on bad input, with no state change.
        """
        try:
            x = self._resolve_context(context)
            with self._lock:
                self._admit(request_id, attrs)
                engine = self._engine
                t, mode = self._time.time_of(timestamp, "decide", self._books.last_t)
                # every check is done (the kernel's candidate checks included) before any
                # state changes: housekeeping at t follows the decision
                fused = (
                    None if self._time_refused(t) else decide_fused(engine, candidates, x, attrs)
                )
                if fused is None:
                    cand, xrow, codes = engine.prepare(candidates, x, attrs)
                    self._check_time(t)
                    pos, forced, adjusted = engine.decide_prepared(cand, xrow, codes, t)
                    x_saved = None if engine.policy.n_features is None else xrow
                    given = given_id(candidates, pos)
                else:
                    (cand, pos, x_saved, given), forced, adjusted = fused, -1, 0
                self._commit_time(mode)
                head, first, decision_id = self._books.decision_id(self.replica)
                self._books.last_t = max(self._books.last_t, t)
                d = engine.decision(
                    cand, pos, forced, adjusted, t, decision_id, request_id, given
                )  # fmt: skip
                self._register_one(head, first, d.arm_index, t, x_saved)
                if self._log is not None:
                    probs = engine.probabilities
                    x_log = None if x_saved is None else x_saved[0]
                    self._log_decision(d, decision_id, request_id, cand, probs, x_log, attrs)
                self._housekeep(t)
                return d
        except Exception:
            self._count("rejected")
            raise

    def decide_many(self, requests: Sequence[Mapping[str, Any]]) -> Decisions:
        """Decide for each request mapping (keys: the arguments of :meth:`decide`) in one
        call of the batch pipeline; all requests are checked before any is decided."""
        try:
            with self._lock:
                engine = self._engine
                modes: set[str] = set()

                def resolve_times(stamps: list[Any]) -> np.ndarray:
                    times, used = self._time.times_of(stamps, "requests[{}]", self._books.last_t)
                    modes.update(used)
                    return times

                batch = request_batch(engine, requests, resolve_times, self._resolve_context)
                if batch.times.size:  # admission is per decision: an empty batch is not refused
                    self._admit()
                if self._log is not None and (batch.codes is None or not batch.plain_ids):
                    for request_id, attrs in zip(batch.request_ids, batch.attrs, strict=True):
                        check_log_fields(request_id, attrs)
                if len(modes) > 1:
                    raise InvalidInputError(
                        "requests mix given and missing timestamps: give every request its "
                        "event time, or none"
                    )
                times = batch.times
                if times.size:
                    self._check_time(float(times.min()))
                codes = batch.codes  # None: encoded (and refused) request by request
                if codes is None:
                    codes = engine.encode_attrs(batch.attrs, len(times))
                xs = engine.policy.context_rows(batch.contexts, len(times))
                out = engine.decide_checked(batch.ptr, batch.idx, xs, times, codes)
                for mode in modes:
                    self._commit_time(mode)
                head, first, ids = self._books.decision_ids(self.replica, len(times))
                out = out.with_ids(tuple(ids), batch.request_ids)
                if times.size:
                    self._books.last_t = max(self._books.last_t, float(times.max()))
                self._register(head, first, out.arms, times, batch.contexts)
                if self._log is not None and times.size:
                    self._log.write_decision_rows(decision_rows(
                        out, batch.ptr, batch.idx, batch.contexts, batch.attrs,
                        self._log_ids.of(self.registry, self._log.writer),
                        self.config.engine.policy.kind,
                    ))  # fmt: skip
                if times.size:
                    self._housekeep(float(times.max()))
                return out
        except Exception:
            self._count("rejected")
            raise

    def _admit(self, request_id: Any = None, attrs: Any = None) -> None:
        """Refuse a call, before any change, that the log or autosave policy would refuse
        (see :mod:`allocator.serving.sinks`), or whose log fields are bad."""
        self._autosaver.admit()
        if self._log is not None:
            self._log.admit()
            check_log_fields(request_id, attrs)

    def _commit_time(self, mode: str) -> None:
        self._time.commit(mode)
        self._books.time_mode = mode

    def _time_refused(self, t: float) -> bool:
        return t < self._books.last_t - self.config.serving.max_clock_skew_s

    def _check_time(self, t: float) -> None:
        skew = self.config.serving.max_clock_skew_s
        if self._time_refused(t):
            raise InvalidInputError(
                f"timestamp {t} is {self._books.last_t - t:.3f} s before the latest decision: "
                f"more than max_clock_skew_s = {skew}"
            )

    def _register(
        self, head: str, first: int, arms: np.ndarray, times: np.ndarray, xs: np.ndarray | None
    ) -> None:
        """Pending entries for decisions ``<head>-<first + k>`` in one slice; the oldest
        over the capacity learn the default outcome (logged at the time of the decision
        whose registration pushed them out, as one-by-one registration would)."""
        before = len(self._pending)
        self._pending.add_many(head, first, arms, times, xs)
        self._books.counts["decisions"] += arms.shape[0]
        rows = self._pending.over_capacity()
        if rows.size:
            self._books.counts["evicted"] += rows.size
            at = max(0, self._pending.capacity - before) + np.arange(rows.size)
            self._learn_defaults(rows, times[np.minimum(at, arms.shape[0] - 1)])

    def _register_one(
        self, head: str, counter: int, arm: int, t: float, x: np.ndarray | None
    ) -> None:
        """:meth:`_register` for one decision (no arrays built unless one is evicted)."""
        pending = self._pending
        pending.add_one(head, counter, arm, t, x)
        self._books.counts["decisions"] += 1
        if len(pending) > pending.capacity:
            rows = pending.over_capacity()
            self._books.counts["evicted"] += rows.size
            self._learn_defaults(rows, np.full(rows.size, t))

    def _count(self, name: str) -> None:
        with self._lock:
            self._books.counts[name] += 1

    def _resolve_context(self, context: Any) -> Any:
        if context is None or type(context) is np.ndarray or not isinstance(context, Mapping):
            return context  # the policy checks it
        if not self._feature_index:
            raise InvalidInputError("context is a mapping, but serving.feature_names is not set")
        x = np.zeros(len(self._feature_index))
        for name, value in context.items():
            i = self._feature_index.get(name)
            if i is None:
                raise InvalidInputError(
                    f"context feature {brief(name)} is not in serving.feature_names"
                )
            real = isinstance(value, (int, float, np.integer, np.floating))
            if isinstance(value, bool) or not real:
                raise InvalidInputError(f"context[{name!r}] must be a number, got {brief(value)}")
            x[i] = value
        return x

    def _log_decision(
        self, d: Decision, decision_id: str, request_id: str | None, cand: np.ndarray,
        probabilities: np.ndarray, x: np.ndarray | None, attrs: Mapping[str, str] | None,
    ) -> None:  # fmt: skip
        """One row of the decision log (the candidate ids cost O(C) in Python: logging only)."""
        registry = self.registry
        assert self._log is not None
        self._log.write_decision(DecisionRecord(
            decision_id=decision_id, request_id=request_id, timestamp=d.timestamp,
            arm_id=d.arm_id, arm_index=d.arm_index, group=d.group, propensity=d.propensity,
            forced=d.forced, model_version=d.model_version,
            policy_kind=self.config.engine.policy.kind,
            candidates=[registry.arm_id(int(a)) for a in cand],
            candidate_probabilities=np.array(probabilities, dtype=np.float64),
            context=None if x is None else np.asarray(x, dtype=np.float64),
            attrs=dict(attrs or {}), adjusted_by=d.adjusted_by,
        ))  # fmt: skip

    def close(self) -> None:
        """Flush and close the decision log (the allocator keeps serving without one); a
        :class:`~allocator.errors.DecisionLogError` if its last rows could not be written."""
        with self._lock:
            log, self._log = self._log, None
            if log is not None:
                log.close()

    @classmethod
    def load(
        cls, path: str | Path, *, clock: Callable[[], float] = time.time,
        log_dir: str | Path | None = None, log_rotate_rows: int = 100_000,
        log_flush_interval_s: float = 1.0,
        snapshot_key: bytes | str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Allocator:  # fmt: skip
        """Rebuild an allocator from :meth:`save`; it makes the decisions the original would
        (under a new decision-id epoch). With a ``snapshot_key`` the file must carry its tag;
        files over ``max_bytes`` are refused unread."""
        key = load_key(snapshot_key)
        saved = read_allocator_snapshot(path, key, max_bytes)
        out = cls.__new__(cls)
        out._setup(
            saved.config, saved.seed, saved.replica, clock, log_dir, log_rotate_rows,
            log_flush_interval_s,
        )  # fmt: skip
        out._snapshot_key = key
        out._install(saved.engine, saved.pending)
        out._books = saved.books
        if saved.books.time_mode is not None:
            out._time.commit(saved.books.time_mode)
        return out
