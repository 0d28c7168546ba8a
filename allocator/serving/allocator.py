"""The embedded serving facade: ids, the lock, pending feedback, the decision log, autosave.

Decisions and learning are the engine's (:class:`~allocator.engine.Engine`); this layer
turns arm ids into indices, issues decision ids, waits for delayed feedback, logs, saves.

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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from allocator.decisions import Decision, Decisions
from allocator.engine import Engine, given_id
from allocator.errors import InvalidInputError, SnapshotError, brief
from allocator.logs import DecisionLogWriter, OutcomeRecord
from allocator.logs.indexed import IndexedDecision
from allocator.objective import Objective
from allocator.registry import ArmRegistry
from allocator.serving.arms import build_catalogue
from allocator.serving.catalogue import CatalogueChanges
from allocator.serving.clock import ServingClock
from allocator.serving.config import AllocatorConfig, Outcome, as_allocator_config
from allocator.serving.fused import decide_fused
from allocator.serving.log_rows import LoggedCatalogue, decision_rows, outcome_rows
from allocator.serving.pending import Pending, PendingTable
from allocator.serving.persistence import (
    Books,
    allocator_snapshot,
    published_size_bound,
    read_allocator_snapshot,
    read_published,
)
from allocator.serving.requests import request_batch
from allocator.serving.sinks import Autosaver, LogSink, check_log_fields, log_metrics
from allocator.serving.staging import stage_engine
from allocator.snapshot import DEFAULT_MAX_BYTES, load_key, write_snapshot


class UpdateStatus(StrEnum):
    """What became of one outcome given to :meth:`Allocator.update`."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # feedback for a decision already learned (or expired): ignored
    UNKNOWN = "unknown"  # never issued here, or forgotten: ignored and counted


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
            for given in (ids, np.array(ids), cand):  # every query form of the fused call
                decide_fused(self._engine, given, x, None, t0)
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
                    None if self._time_refused(t)
                    else decide_fused(engine, candidates, x, attrs, t)
                )  # fmt: skip
                if fused is None:
                    cand, xrow, codes = engine.prepare(candidates, x, attrs)
                    self._check_time(t)
                    pos, forced, adjusted = engine.decide_prepared(cand, xrow, codes, t)
                    x_saved = None if engine.policy.n_features is None else xrow
                    given = given_id(candidates, pos)
                else:
                    cand, pos, x_saved, given, forced, adjusted = fused
                self._commit_time(mode)
                head, first, decision_id = self._books.decision_id(self.replica)
                self._books.last_t = max(self._books.last_t, t)
                d = engine.decision(
                    cand, pos, forced, adjusted, t, decision_id, request_id, given
                )  # fmt: skip
                self._register_one(head, first, d.arm_index, t, x_saved)
                if self._log is not None:
                    probs = engine.probabilities
                    self._log_decision(d, decision_id, request_id, cand, probs, x_saved, attrs)
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
        """One schema-3 row of the decision log, as :meth:`decide_many` writes it for one
        request (candidates as the writer's catalogue indices; ``x`` the (1, d) context), made
        a table when the writer drains; the arrays it holds are copies the row owns."""
        log = self._log
        assert log is not None
        log.write_decision(IndexedDecision(
            decision_id, request_id, d.timestamp, self._log_ids.of(self.registry, log.writer),
            d.arm_index, d.propensity, d.forced, d.model_version,
            self.config.engine.policy.kind, cand.astype(np.int32), probabilities,
            None if x is None else x[0].copy(), None if attrs is None else dict(attrs),
            d.adjusted_by,
        ))  # fmt: skip

    def close(self) -> None:
        """Flush and close the decision log (the allocator keeps serving without one); a
        :class:`~allocator.errors.DecisionLogError` if its last rows could not be written."""
        with self._lock:
            log, self._log = self._log, None
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
        try:
            check_decision_id(decision_id, "decision_id")
            result = parse_outcome(outcome, "outcome", self._weighed)
        except InvalidInputError:
            self._count("rejected")
            raise
        with self._lock:
            self._admit()
            try:
                t, mode = self._time.time_of(timestamp, "update", self._books.last_t, True)
                row = self._pending.find(decision_id)
                if row >= 0:
                    entry = self._pending.entry(row)
                    reward = self._reward(entry.arm, result)
            except InvalidInputError:
                self._books.counts["rejected"] += 1
                raise
            self._commit_time(mode)
            if row < 0:
                return self._not_pending(decision_id)
            self._learn(decision_id, entry, result, t, reward=reward, row=row)
            self._books.counts["updates"] += 1
            self._housekeep(t)
            return UpdateStatus.APPLIED

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
        try:
            if not isinstance(feedback, (list, tuple)):
                raise InvalidInputError(
                    f"feedback must be a list of (decision_id, outcome) pairs, got "
                    f"{type(feedback).__name__}"
                )
            parsed = []
            for i, item in enumerate(feedback):
                if not isinstance(item, tuple) or len(item) != 2:
                    raise InvalidInputError(f"feedback[{i}] must be a (decision_id, outcome) pair")
                check_decision_id(item[0], f"feedback[{i}].decision_id")
                outcome = parse_outcome(item[1], f"feedback[{i}].outcome", self._weighed)
                parsed.append((item[0], outcome))
        except InvalidInputError:
            self._count("rejected")
            raise
        with self._lock:
            self._admit()
            try:
                t, mode = self._time.time_of(None, "update_many", self._books.last_t, True)
                plan: list[tuple[int, str, Pending, Outcome, float]] = []
                seen: set[str] = set()
                for i, (decision_id, result) in enumerate(parsed):
                    entry = None if decision_id in seen else self._pending.get(decision_id)
                    if entry is not None:
                        seen.add(decision_id)
                        reward = self._objective.reward_one(
                            entry.arm, result.click, result.order, result.gmv
                        )
                        plan.append((i, decision_id, entry, result, reward))
                if plan:
                    self.policy.check_outcomes(
                        [p[3].click for p in plan], [p[3].order for p in plan],
                        [p[3].gmv for p in plan], np.array([p[4] for p in plan]), "rewards",
                    )  # fmt: skip
            except InvalidInputError as err:
                self._books.counts["rejected"] += 1
                raise InvalidInputError(f"update_many, nothing applied: {err}") from None
            self._commit_time(mode)
            statuses = [UpdateStatus.UNKNOWN] * len(parsed)
            planned = {i for i, *_ in plan}
            for i, decision_id, entry, result, reward in plan:
                self._learn(decision_id, entry, result, t, reward=reward)
                self._books.counts["updates"] += 1
                statuses[i] = UpdateStatus.APPLIED
            for i, (decision_id, _) in enumerate(parsed):
                if i not in planned:
                    statuses[i] = self._not_pending(decision_id)
            self._housekeep(t)
            return statuses

    def _not_pending(self, decision_id: str) -> UpdateStatus:
        """Status of feedback for a decision that is not waiting (counted)."""
        if self._pending.was_finished(decision_id):
            self._books.counts["duplicates"] += 1
            return UpdateStatus.DUPLICATE
        self._books.counts["unknown"] += 1
        return UpdateStatus.UNKNOWN

    def expire(self, now: Any = None) -> int:
        """Give the default outcome to every decision older than the reward wait."""
        with self._lock:
            self._admit()
            t, mode = self._time.time_of(now, "expire", self._books.last_t, True)
            self._commit_time(mode)
            return self._expire(t)

    def _reward(self, arm: int, outcome: Outcome) -> float:
        """The checked reward of ``outcome`` for ``arm`` (InvalidInputError outside the
        policy's domain)."""
        reward = self._objective.reward_one(arm, outcome.click, outcome.order, outcome.gmv)
        policy = self._engine.policy
        if policy.LEARNS_EVENTS:  # the events themselves are what it learns
            policy.check_outcomes(
                [outcome.click], [outcome.order], [outcome.gmv], np.array([reward]), "reward"
            )
            return reward
        return policy.check_reward(reward, "reward")

    def _learn(
        self, decision_id: str | None, entry: Pending, outcome: Outcome, t: float,
        source: str = "feedback", reward: float | None = None, row: int = -1,
    ) -> None:  # fmt: skip
        """Apply one outcome; the pending entry goes only once the policy accepted it. The
        id may be None when ``row`` is given (it is then spelled only for the log)."""
        policy = self._engine.policy
        if reward is None:
            reward = self._reward(entry.arm, outcome)
        if policy.LEARNS_EVENTS:
            version = policy.version
            policy.learn_outcome(
                entry.arm, outcome.click, outcome.order, outcome.gmv, reward, entry.context
            )
            refreshed = policy.version != version
        else:  # arm and context checked at decide
            x = policy.context_row(None) if entry.context is None else entry.context[None, :]
            refreshed = policy.update_checked(entry.arm, reward, x)
        if refreshed:
            self._books.counts["refreshes"] += 1
        self._catalogue.learned(entry.arm)
        log, logged = self._log, decision_id
        if log is not None and logged is None:
            logged = self._pending.id_of(row)
        self._pending.settle(decision_id, row)
        if log is not None and logged is not None:
            log.write_outcome(OutcomeRecord(
                decision_id=logged, timestamp=t, click=outcome.click, order=outcome.order,
                gmv=outcome.gmv, reward=reward, source=source,  # type: ignore[arg-type]
            ))  # fmt: skip

    def _learn_default(self, row: int, t: float) -> None:
        """The default outcome for the pending decision at ``row`` (the one-row path of
        expiry and eviction: no id is spelled unless the log needs it)."""
        o = self.config.serving.default_outcome
        self._learn(None, self._pending.entry(row), o, t, "expired_default", row=row)

    def _learn_defaults(self, rows: np.ndarray, log_times: np.ndarray) -> None:
        """The default outcome for pending ``rows``, learned as one batch (the policy's
        refresh cadence is checked once, after it) and logged as one table; the rows go
        only once the policy accepted them. One row takes the scalar path (cheaper)."""
        if rows.size == 1:
            self._learn_default(int(rows[0]), float(log_times[0]))
            return
        o = self.config.serving.default_outcome
        entries = self._pending.entries(rows)
        rewards = self._objective.reward(entries.arms, o.click, o.order, o.gmv)
        version = self.policy.version
        n = entries.arms.shape[0]
        self.policy.learn_outcomes(
            entries.arms, np.full(n, o.click), np.full(n, o.order), np.full(n, o.gmv), rewards,
            entries.contexts,
        )  # fmt: skip
        if self.policy.version != version:
            self._books.counts["refreshes"] += 1
        self._catalogue.learned_many(entries.arms)
        self._pending.finish_rows(rows)
        if self._log is not None:
            self._log.write_outcome_rows(
                outcome_rows(entries.ids, log_times, o, rewards, "expired_default")
            )

    def _expire(self, t: float) -> int:
        deadline = t - self.config.serving.reward_wait_s
        row = self._pending.due_one(deadline)
        if row == -1:
            return 0
        if row >= 0:  # one decision a call: the steady state of serving
            self._learn_default(row, t)
            n = 1
        else:
            rows = self._pending.expired(deadline)
            n = rows.shape[0]
            self._learn_defaults(rows, np.full(n, t))
        self._books.counts["expired"] += n
        return n

    def _housekeep(self, t: float) -> None:
        self._expire(t)
        self._autosaver.tick(t, self.save)
        every = self.config.serving.refresh_every_s
        if every is not None and t - self._books.last_refresh_t >= every:
            if self.policy.pending_updates:
                self.policy.refresh()
                self._books.counts["refreshes"] += 1
            self._books.last_refresh_t = t

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


def check_decision_id(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where} must be a string, got {brief(value)}")


def parse_outcome(outcome: Any, where: str, weighed: frozenset[str]) -> Outcome:
    """An :class:`Outcome` from a mapping, or a typed error naming the field.

    It must carry at least one field the objective weighs (``weighed``): an outcome without
    one would silently teach a reward of 0.
    """
    if isinstance(outcome, Outcome):
        result = outcome
    else:
        try:
            result = Outcome.model_validate({} if outcome is None else outcome)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(map(str, first["loc"]))
            value = brief(first.get("input"))
            raise InvalidInputError(f"{where}.{field} = {value}: {first['msg']}") from None
    if not result.model_fields_set & weighed:
        fields = sorted(weighed)
        raise InvalidInputError(
            f"{where} carries none of the fields the objective weighs ({', '.join(fields)}): it "
            f"would teach a reward of 0; say so explicitly, e.g. {{{fields[0]!r}: 0}}"
        )
    return result
