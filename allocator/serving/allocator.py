"""The embedded serving facade: ids, the lock, pending feedback, the decision log, autosave.

Decisions and learning are the engine's (:class:`~allocator.engine.Engine`); this layer
turns arm ids into indices, issues decision ids, waits for delayed feedback, logs, saves.
The facade checks and delegates: what it serves with is one
:class:`~allocator.serving.state.ServingState`, and the outcome side (pending decisions,
feedback, expiry) is :class:`~allocator.serving.outcomes.Outcomes` over the same state.

Locking model: one re-entrant mutex per allocator serialises every operation that reads or
writes learned state (decide, update, expiry, refresh, save, reconfigure, merge). Work that
needs no state (parsing outcomes, reading a snapshot file, compiling a new configuration)
happens before the lock is taken, and the numba kernels run without the GIL. Growing the
arm catalogue copies the per-arm arrays in slices, taking the lock per slice, so decisions
keep flowing while a large catalogue grows (:meth:`Allocator.add_arms`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from allocator.decisions import Decision, Decisions
from allocator.engine import Engine, given_id
from allocator.errors import InvalidInputError, SnapshotError
from allocator.objective import Objective
from allocator.registry import ArmRegistry
from allocator.serving.arms import build_catalogue
from allocator.serving.config import AllocatorConfig, Outcome, as_allocator_config
from allocator.serving.fused import decide_fused
from allocator.serving.log_rows import decision_row, decision_rows
from allocator.serving.outcomes import Outcomes, UpdateStatus, check_decision_id, parse_outcome
from allocator.serving.pending import PendingTable
from allocator.serving.persistence import (
    allocator_snapshot,
    published_size_bound,
    read_allocator_snapshot,
    read_published,
)
from allocator.serving.requests import request_batch, resolve_context
from allocator.serving.sinks import check_batch_log_fields, log_metrics
from allocator.serving.staging import stage_engine
from allocator.serving.state import ServingState
from allocator.snapshot import DEFAULT_MAX_BYTES, load_key, write_snapshot

__all__ = ["Allocator", "UpdateStatus", "check_decision_id", "parse_outcome"]


class Allocator:
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
        self._setup(
            ServingState(cfg, seed, replica, clock, log_dir, log_rotate_rows,
                         log_flush_interval_s, key)
        )  # fmt: skip
        self.set_autosave(autosave_path, autosave_every_s)
        self._state.install(
            engine, PendingTable(cfg.serving.pending_capacity, engine.policy.n_features)
        )

    def _setup(self, state: ServingState) -> None:
        self._state = state
        self._outcomes = Outcomes(state, self.save)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> AllocatorConfig:
        return self._state.config

    @property
    def seed(self) -> int:
        return self._state.seed

    @property
    def replica(self) -> str:
        return self._state.replica

    @property
    def registry(self) -> ArmRegistry:
        return self._state.engine.registry

    @property
    def engine(self) -> Engine:
        return self._state.engine

    @property
    def policy(self) -> Any:
        return self._state.engine.policy

    def warmup(self) -> None:
        """Compile every kernel of the decision and update paths now, not on first traffic."""
        s = self._state
        with s.lock:
            arrays, meta = s.engine.export_state()
            reg = self.registry
            cand = np.flatnonzero(reg.active[: reg.n_arms])[:2]
            x = None if self.policy.n_features is None else np.zeros(self.policy.n_features)
            t0 = s.books.last_t if math.isfinite(s.books.last_t) else 0.0
            d = s.engine.decide(cand, x, None, t0)
            ids = [reg.arm_id(int(a)) for a in cand]
            for given in (ids, np.array(ids), cand):  # every query form of the fused call
                decide_fused(s.engine, given, x, None, t0)
            # through the outcome entry points, which every family accepts (a factored
            # family refuses a bare scalar reward)
            self.policy.learn_outcome(d.arm_index, 0.0, 0.0, 0.0, 0.0, x)
            xs = None if x is None else x[None, :]
            s.engine.decide_batch(np.array([0, cand.size]), cand, xs, [t0])
            zero = np.zeros(1)
            self.policy.learn_outcomes(cand[:1], zero, zero, zero, zero, xs)
            self.policy.refresh()
            s.engine = Engine.restore(
                s.config.engine.policy, s.config.constraints, s.seed, arrays, meta
            )
            s.objective = Objective(s.config.engine.objective, s.engine.registry)

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
        s = self._state
        try:
            x = resolve_context(s.feature_index, context)
            with s.lock:
                s.admit(request_id, attrs)
                engine, books = s.engine, s.books
                t, mode = s.time.time_of(timestamp, "decide", books.last_t)
                # every check is done (the kernel's candidate checks included) before any
                # state changes: housekeeping at t follows the decision
                fused = (
                    None if s.time_refused(t)
                    else decide_fused(engine, candidates, x, attrs, t)
                )  # fmt: skip
                if fused is None:
                    cand, xrow, codes = engine.prepare(candidates, x, attrs)
                    s.check_time(t)
                    pos, forced, adjusted = engine.decide_prepared(cand, xrow, codes, t)
                    x_saved = None if engine.policy.n_features is None else xrow
                    given = given_id(candidates, pos)
                else:
                    cand, pos, x_saved, given, forced, adjusted = fused
                s.commit_time(mode)
                head, first, decision_id = books.decision_id(s.replica)
                books.last_t = max(books.last_t, t)
                d = engine.decision(
                    cand, pos, forced, adjusted, t, decision_id, request_id, given
                )  # fmt: skip
                outcomes = self._outcomes
                outcomes.register_one(head, first, d.arm_index, t, x_saved)
                log = s.log
                if log is not None:
                    probs = engine.probabilities
                    log.write_decision(decision_row(
                        d, decision_id, request_id, s.log_ids.of(engine.registry, log.writer),
                        s.config.engine.policy.kind, cand, probs, x_saved, attrs,
                    ))  # fmt: skip
                outcomes.housekeep(t)
                return d
        except Exception:
            s.count("rejected")
            raise

    def decide_many(self, requests: Sequence[Mapping[str, Any]]) -> Decisions:
        """Decide for each request mapping (keys: the arguments of :meth:`decide`) in one
        call of the batch pipeline; all requests are checked before any is decided."""
        s = self._state
        try:
            with s.lock:
                engine = s.engine
                modes: set[str] = set()

                def resolve_times(stamps: list[Any]) -> np.ndarray:
                    times, used = s.time.times_of(stamps, "requests[{}]", s.books.last_t)
                    modes.update(used)
                    return times

                batch = request_batch(
                    engine, requests, resolve_times, partial(resolve_context, s.feature_index)
                )
                if batch.times.size:  # admission is per decision: an empty batch is not refused
                    s.admit()
                if s.log is not None:
                    plain = batch.codes is not None and batch.plain_ids
                    check_batch_log_fields(batch.request_ids, batch.attrs, plain)
                if len(modes) > 1:
                    raise InvalidInputError(
                        "requests mix given and missing timestamps: give every request its "
                        "event time, or none"
                    )
                times = batch.times
                if times.size:
                    s.check_times(times)
                codes = batch.codes  # None: encoded (and refused) request by request
                if codes is None:
                    codes = engine.encode_attrs(batch.attrs, len(times))
                xs = engine.policy.context_rows(batch.contexts, len(times))
                out = engine.decide_checked(batch.ptr, batch.idx, xs, times, codes)
                for mode in modes:
                    s.commit_time(mode)
                head, first, ids = s.books.decision_ids(s.replica, len(times))
                out = out.with_ids(tuple(ids), batch.request_ids)
                if times.size:
                    s.books.last_t = max(s.books.last_t, float(times.max()))
                self._outcomes.register(head, first, out.arms, times, batch.contexts)
                if s.log is not None and times.size:
                    s.log.write_decision_rows(decision_rows(
                        out, batch.ptr, batch.idx, batch.contexts, batch.attrs,
                        s.log_ids.of(self.registry, s.log.writer), s.config.engine.policy.kind,
                    ))  # fmt: skip
                if times.size:
                    self._outcomes.housekeep(float(times.max()))
                return out
        except Exception:
            s.count("rejected")
            raise

    def close(self) -> None:
        """Flush and close the decision log (the allocator keeps serving without one); a
        :class:`~allocator.errors.DecisionLogError` if its last rows could not be written."""
        s = self._state
        with s.lock:
            log, s.log = s.log, None
            if log is not None:
                log.close()

    # -------------------------------------------------------------------- feedback
    def update(
        self, decision_id: str, outcome: Outcome | Mapping[str, float] | None = None,
        timestamp: Any = None,
    ) -> UpdateStatus:  # fmt: skip
        """Learn from the outcome of ``decision_id``; late, repeated or unknown ids are safe.

        Returns ``APPLIED`` once per decision; a second outcome is ``DUPLICATE`` (ignored,
        counted), an id never issued (or long forgotten) is ``UNKNOWN`` (ignored, counted).
        Invalid outcomes (NaN, negative) raise :class:`InvalidInputError`.
        """
        return self._outcomes.update(decision_id, outcome, timestamp)

    def update_many(
        self, feedback: Sequence[tuple[str, Outcome | Mapping[str, float] | None]]
    ) -> list[UpdateStatus]:
        """:meth:`update` for ``(decision_id, outcome)`` pairs, all at the time an
        :meth:`update` without a timestamp would take, under one lock.

        All or nothing: every outcome and reward is checked before any is learned, so a
        bad item raises (naming it) with nothing applied. Unknown or repeated ids are not
        errors: their status says so (a second outcome for one id in the batch is
        ``DUPLICATE``).
        """
        return self._outcomes.update_many(feedback)

    def expire(self, now: Any = None) -> int:
        """Give the default outcome to every decision older than the reward wait."""
        return self._outcomes.expire(now)

    def set_autosave(self, path: str | Path | None, every_s: float = 300.0) -> None:
        """Save to ``path`` (atomically) at most every ``every_s`` seconds of traffic time;
        a failure follows ``serving.on_autosave_error`` (:mod:`allocator.serving.sinks`)."""
        with self._state.lock:
            self._state.autosaver.set(path, every_s)

    # ------------------------------------------------------------------- catalogue
    def add_arms(self, ids: Sequence[str], group: str, features: Any = None) -> np.ndarray:
        """Add merchants (or partners) while serving; returns their indices.

        New arms start from their group's prior and can be chosen by the next decision.
        Cost is proportional to the arms added; a growth of the per-arm arrays is copied in
        slices with decisions served between them (see :mod:`allocator.serving.catalogue`).
        All ids and features are checked before any arm is added.
        """
        return self._state.catalogue.add(ids, group, features)

    def retire_arms(self, ids: Sequence[str]) -> np.ndarray:
        """Stop serving ``ids`` from the next decision on (learned state is kept)."""
        return self._state.catalogue.retire(ids)

    # ------------------------------------------------------------- configuration
    def reconfigure(self, config: AllocatorConfig | Mapping[str, Any] | str | Path) -> None:
        """Swap in a new configuration atomically, keeping what was learned.

        A staged engine (arm changes, new hyper-parameters adopting the running statistics,
        compiled contracts with unchanged constraints' queues) is built, then installed by
        plain assignments. Any error leaves the running allocator untouched. For adding or
        retiring arms while serving, :meth:`add_arms` / :meth:`retire_arms` are cheaper.
        """
        cfg = as_allocator_config(config)
        s = self._state
        with s.catalogue.mutex, s.lock:
            engine = stage_engine(s.engine, s.config, cfg, s.seed)
            # commit: nothing below can fail
            s.config = cfg
            s.install(engine, s.pending)
            s.feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}
            s.pending.set_capacity(cfg.serving.pending_capacity)
            self._outcomes.evict(s.books.last_t if math.isfinite(s.books.last_t) else 0.0)

    # ---------------------------------------------------------------- fleet learning
    def export_delta(self) -> dict[str, np.ndarray]:
        """Sufficient statistics learned since the previous export (send to the learner)."""
        with self._state.lock:
            return self.policy.export_delta()

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Fold a replica's delta into this (learner) allocator's posterior (checked whole
        before anything changes)."""
        with self._state.catalogue.mutex, self._state.lock:
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
        s = self._state
        with s.lock:
            mine = self.registry.all_ids()
            bound = published_size_bound(s.engine) if max_bytes is None else max_bytes
        published, ids = read_published(path, s.config, s.seed, s.snapshot_key, bound)
        if ids[: len(mine)] != mine:
            # the learner's catalogue must extend this replica's: an arm this replica added
            # that the learner lacks would vanish under its pending decisions
            missing = len(mine) - len(ids) if len(ids) < len(mine) else 0
            raise SnapshotError(
                f"published snapshot {path} has a different arm catalogue"
                + (f": it lacks {missing} arm(s) this replica has" if missing else "")
            )
        published.policy.export_delta()  # the adopted state is the new delta baseline
        with s.catalogue.mutex, s.lock:
            published.policy.state.stream[:] = self.policy.state.stream
            published.contracts = s.engine.contracts
            published.contracts.reserve(published.registry.capacity, 0)
            s.install(published, s.pending)

    # --------------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        """Counters and gauges, including each constraint's share against its target."""
        s = self._state
        with s.lock:
            out: dict[str, Any] = dict(s.books.counts)
            out["pending"] = len(s.pending)
            out["model_version"] = self.policy.version
            out["arms_active"] = int(self.registry.active.sum())
            out["catalogue_max_lock_s"], out["catalogue_max_lock_cpu_s"] = s.catalogue.longest_hold
            reports = s.engine.report()
            out["backstops"] = sum(r.backstops for r in reports)
            out["constraints"] = {r.name: dataclasses.asdict(r) for r in reports}
            out.update(log_metrics(s.log))
            out.update(s.autosaver.metrics())
            return out

    # ------------------------------------------------------------------- snapshots
    def snapshot_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Every array and meta value needed to resume exactly where this allocator is."""
        s = self._state
        with s.lock:
            return allocator_snapshot(s.engine, s.pending, s.config, s.seed, s.replica, s.books)

    def save(self, path: str | Path) -> None:
        """Write the whole state atomically (exclusive temp file, fsync, rename), tagged
        with the ``snapshot_key`` if one is configured."""
        s = self._state
        with s.lock:  # the model's arrays are written live: no copy of the state
            arrays, meta = allocator_snapshot(
                s.engine, s.pending, s.config, s.seed, s.replica, s.books, copy=False
            )
            write_snapshot(path, arrays, meta, s.snapshot_key)
            s.books.counts["saves"] += 1
            s.autosaver.saved()

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
        state = ServingState(
            saved.config, saved.seed, saved.replica, clock, log_dir, log_rotate_rows,
            log_flush_interval_s, key,
        )  # fmt: skip
        state.install(saved.engine, saved.pending)
        state.books = saved.books
        if saved.books.time_mode is not None:
            state.time.commit(saved.books.time_mode)
        out = cls.__new__(cls)
        out._setup(state)
        return out
