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
from allocator.engine import Engine
from allocator.errors import InvalidInputError, SnapshotError
from allocator.logs import DecisionLogWriter, DecisionRecord, OutcomeRecord
from allocator.objective import Objective
from allocator.registry import ArmRegistry
from allocator.serving.config import (
    AllocatorConfig,
    Outcome,
    config_without_arms,
    load_allocator_config,
)
from allocator.serving.pending import Pending, PendingTable
from allocator.serving.staging import stage_engine
from allocator.serving.state_io import export_engine, restore_engine
from allocator.snapshot import read_snapshot, write_snapshot
from allocator.timestamps import as_epoch_seconds

SNAPSHOT_SCHEMA = 2
#: arms per lock hold while the per-arm arrays grow (a slice copies ~0.1 ms of memory)
GROW_SLICE = 256
#: arms per lock hold while arms are added (a slice draws their bank rows: ~40 µs for 4
#: Beta arms of 256 rows, a few decides)
ADD_SLICE = 4


class UpdateStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # feedback for a decision already learned (or expired): ignored
    UNKNOWN = "unknown"  # never issued here, or forgotten: ignored and counted


COUNTERS = (
    "decisions", "updates", "duplicates", "unknown", "expired", "evicted", "rejected",
    "refreshes", "saves",
)  # fmt: skip


def _arm_features(config: AllocatorConfig) -> np.ndarray | None:
    if config.engine.policy.kind != "shared_linear":
        return None
    return np.array([a.features for a in config.arms], dtype=np.float64)


class Allocator:
    """Thread-safe, snapshot-able traffic allocator for one serving process."""

    def __init__(
        self,
        config: AllocatorConfig | str | Path,
        seed: int = 0,
        *,
        replica: str = "r0",
        clock: Callable[[], float] = time.time,
        log_dir: str | Path | None = None,
        log_rotate_rows: int = 100_000,
        autosave_path: str | Path | None = None,
        autosave_every_s: float = 300.0,
    ) -> None:
        cfg = config if isinstance(config, AllocatorConfig) else load_allocator_config(config)
        registry = ArmRegistry.build([a.id for a in cfg.arms], [a.group for a in cfg.arms])
        engine = Engine(cfg.engine.policy, cfg.constraints, registry, seed, _arm_features(cfg))
        self._setup(cfg, seed, replica, clock, log_dir, log_rotate_rows)
        self.set_autosave(autosave_path, autosave_every_s)
        self._install(engine, PendingTable(cfg.serving.pending_capacity))

    def _setup(
        self, cfg: AllocatorConfig, seed: int, replica: str, clock: Callable[[], float],
        log_dir: str | Path | None, log_rotate_rows: int,
    ) -> None:  # fmt: skip
        self.config = cfg
        self.seed = seed
        self.replica = replica
        self._clock = clock
        self._lock = threading.RLock()
        self._catalogue_lock = threading.Lock()
        self._touched: list[int] | None = None
        # longest single lock hold of a catalogue change: wall, and this thread's CPU
        self._catalogue_hold = (0.0, 0.0)
        self._log = None if log_dir is None else DecisionLogWriter(log_dir, log_rotate_rows)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._next_id = 0
        self._last_t = -math.inf
        self._last_refresh_t = -math.inf
        self._feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}
        self._autosave: Path | None = None
        self._autosave_every = 300.0
        self._last_autosave_t = -math.inf

    def _install(self, engine: Engine, pending: PendingTable) -> None:
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
            arrays, meta = export_engine(self._engine)
            reg = self.registry
            cand = np.flatnonzero(reg.active[: reg.n_arms])[:2]
            x = None if self.policy.n_features is None else np.zeros(self.policy.n_features)
            t0 = self._last_t if math.isfinite(self._last_t) else 0.0
            d = self._engine.decide(cand, x, None, t0)
            self.policy.update(d.arm_index, 0.0, x)
            self._engine.decide_batch(
                np.array([0, cand.size]), cand, None if x is None else x[None, :], [t0]
            )
            self.policy.update_batch(cand[:1], np.zeros(1), None if x is None else x[None, :])
            self.policy.refresh()
            self._engine = restore_engine(
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
            t = (
                timestamp if type(timestamp) is float and math.isfinite(timestamp)
                else self._clock() if timestamp is None
                else as_epoch_seconds(timestamp)
            )  # fmt: skip
            x = self._resolve_context(context)
            with self._lock:
                engine = self._engine
                cand, xrow, codes = engine.prepare(candidates, x, attrs)  # checks first
                self._check_time(t)
                self._housekeep(t)
                pos, forced, adjusted = engine.decide_prepared(cand, xrow, codes, t)
                decision_id = f"{self.replica}-{self._next_id:x}"
                self._next_id += 1
                self._last_t = max(self._last_t, t)
                d = engine.decision(cand, pos, forced, adjusted, t, decision_id, request_id)
                x_saved = None if self.policy.n_features is None else xrow[0]
                self._register(decision_id, d.arm_index, t, x_saved)
                if self._log is not None:
                    probs = engine.probabilities
                    self._log_decision(d, decision_id, request_id, cand, probs, x_saved, attrs)
                return d
        except Exception:
            self._count("rejected")
            raise

    def decide_many(self, requests: Sequence[Mapping[str, Any]]) -> Decisions:
        """Decide for each request mapping (keys: the arguments of :meth:`decide`) in one
        call of the batch pipeline; all requests are checked before any is decided."""
        try:
            if not isinstance(requests, Sequence) or not all(
                isinstance(r, Mapping) for r in requests
            ):
                raise InvalidInputError("requests must be a sequence of mappings")
            allowed = {"candidates", "context", "attrs", "timestamp", "request_id"}
            for i, req in enumerate(requests):
                extra = set(req) - allowed
                if extra or "candidates" not in req:
                    raise InvalidInputError(
                        f"requests[{i}]: keys must be among {sorted(allowed)} with 'candidates', "
                        f"got {sorted(req)}"
                    )
            now = self._clock()
            times = np.array([
                now if r.get("timestamp") is None else as_epoch_seconds(r["timestamp"])
                for r in requests
            ], dtype=np.float64)  # fmt: skip
            contexts = [self._resolve_context(r.get("context")) for r in requests]
            with self._lock:
                engine = self._engine
                cands = [engine.resolve(r["candidates"]) for r in requests]
                ptr = np.zeros(len(requests) + 1, dtype=np.int64)
                np.cumsum([c.shape[0] for c in cands], out=ptr[1:])
                idx = np.concatenate(cands) if cands else np.zeros(0, dtype=np.int64)
                xs = (
                    None
                    if self.policy.n_features is None
                    else np.stack([self.policy.context_row(x)[0] for x in contexts])
                    if contexts
                    else np.zeros((0, self.policy.n_features))
                )
                if times.size:
                    self._check_time(float(times.min()))
                    self._housekeep(float(times.max()))
                attrs = [r.get("attrs") for r in requests]
                out = engine.decide_batch(ptr, idx, xs, times, attrs)
                ids = tuple(f"{self.replica}-{self._next_id + r:x}" for r in range(len(requests)))
                self._next_id += len(requests)
                if times.size:
                    self._last_t = max(self._last_t, float(times.max()))
                for k, decision_id in enumerate(ids):
                    self._register(
                        decision_id,
                        int(out.arms[k]),
                        float(times[k]),
                        None if xs is None else xs[k],
                    )
                    if self._log is not None:
                        d = self._row(out, k, engine)
                        lo, hi = ptr[k], ptr[k + 1]
                        self._log_decision(
                            d, decision_id, requests[k].get("request_id"), idx[lo:hi],
                            out.probabilities[lo:hi], None if xs is None else xs[k], attrs[k],
                        )  # fmt: skip
                return out.with_ids(ids, tuple(r.get("request_id") for r in requests))
        except Exception:
            self._count("rejected")
            raise

    @staticmethod
    def _row(out: Decisions, r: int, engine: Engine) -> Decision:
        arm = int(out.arms[r])
        reg = engine.registry
        return Decision(
            int(out.positions[r]), arm, float(out.propensities[r]), reg.arm_id(arm),
            reg.group_of(arm), out.forced_by(r), out.adjusted_by(r), out.model_version,
            float(out.timestamps[r]),
        )  # fmt: skip

    def _check_time(self, t: float) -> None:
        skew = self.config.serving.max_clock_skew_s
        if t < self._last_t - skew:
            raise InvalidInputError(
                f"timestamp {t} is {self._last_t - t:.3f} s before the latest decision: "
                f"more than max_clock_skew_s = {skew}"
            )

    def _register(self, decision_id: str, arm: int, t: float, x: np.ndarray | None) -> None:
        evicted = self._pending.add(decision_id, Pending(arm, t, None if x is None else x.copy()))
        if evicted is not None:
            self._counts["evicted"] += 1
            self._learn_default(*evicted, t)
        self._counts["decisions"] += 1

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _resolve_context(self, context: Any) -> Any:
        if not isinstance(context, Mapping):
            return context  # the policy checks it
        if not self._feature_index:
            raise InvalidInputError("context is a mapping, but serving.feature_names is not set")
        x = np.zeros(len(self._feature_index))
        for name, value in context.items():
            i = self._feature_index.get(name)
            if i is None:
                raise InvalidInputError(f"context feature {name!r} is not in serving.feature_names")
            x[i] = value
        return x

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
            result = (
                outcome if isinstance(outcome, Outcome) else Outcome.model_validate(outcome or {})
            )
        except ValidationError as err:
            self._count("rejected")
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise InvalidInputError(
                f"outcome.{where} = {first.get('input')!r}: {first['msg']}"
            ) from None
        try:
            t = self._clock() if timestamp is None else as_epoch_seconds(timestamp)
        except InvalidInputError:
            self._count("rejected")
            raise
        with self._lock:
            entry = self._pending.get(decision_id)
            if entry is None:
                if self._pending.was_finished(decision_id):
                    self._counts["duplicates"] += 1
                    return UpdateStatus.DUPLICATE
                self._counts["unknown"] += 1
                return UpdateStatus.UNKNOWN
            try:
                self._learn(decision_id, entry, result, t)
            except InvalidInputError:
                self._counts["rejected"] += 1
                raise
            self._counts["updates"] += 1
            self._housekeep(t)
            return UpdateStatus.APPLIED

    def update_many(self, feedback: Sequence[tuple[str, Any]]) -> list[UpdateStatus]:
        """:meth:`update` for ``(decision_id, outcome)`` pairs, under one lock."""
        with self._lock:
            return [self.update(decision_id, outcome) for decision_id, outcome in feedback]

    def expire(self, now: Any = None) -> int:
        """Give the default outcome to every decision older than the reward wait."""
        t = self._clock() if now is None else as_epoch_seconds(now)
        with self._lock:
            return self._expire(t)

    def _learn(
        self, decision_id: str, entry: Pending, outcome: Outcome, t: float,
        source: str = "feedback",
    ) -> None:  # fmt: skip
        """Apply one outcome; the pending entry goes only once the policy accepted it."""
        reward = self._objective.reward_one(entry.arm, outcome.click, outcome.order, outcome.gmv)
        self.policy.update(entry.arm, reward, entry.context)
        if self._touched is not None:
            self._touched.append(entry.arm)
        self._pending.pop(decision_id)
        self._pending.finish(decision_id)
        if self._log is not None:
            self._log.write_outcome(OutcomeRecord(
                decision_id=decision_id, timestamp=t, click=outcome.click, order=outcome.order,
                gmv=outcome.gmv, reward=reward, source=source,  # type: ignore[arg-type]
            ))  # fmt: skip

    def _learn_default(self, decision_id: str, entry: Pending, t: float) -> None:
        self._learn(decision_id, entry, self.config.serving.default_outcome, t, "expired_default")

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
        """Flush and close the decision log (the allocator keeps serving without one)."""
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _expire(self, t: float) -> int:
        deadline = t - self.config.serving.reward_wait_s
        n = 0
        while (item := self._pending.pop_expired(deadline)) is not None:
            self._learn_default(*item, t)
            n += 1
        self._counts["expired"] += n
        return n

    def set_autosave(self, path: str | Path | None, every_s: float = 300.0) -> None:
        """Save to ``path`` (atomically) at most every ``every_s`` seconds of traffic time."""
        if path is not None and not (math.isfinite(every_s) and every_s > 0):
            raise InvalidInputError(f"autosave_every_s = {every_s!r}: expected a positive number")
        self._autosave = None if path is None else Path(path)
        self._autosave_every = float(every_s)
        self._last_autosave_t = -math.inf

    def _housekeep(self, t: float) -> None:
        self._expire(t)
        if self._autosave is not None and t - self._last_autosave_t >= self._autosave_every:
            if math.isfinite(self._last_autosave_t):
                self.save(self._autosave)
            self._last_autosave_t = t
        every = self.config.serving.refresh_every_s
        if every is not None and t - self._last_refresh_t >= every:
            if self.policy.pending_updates:
                self.policy.refresh()
                self._counts["refreshes"] += 1
            self._last_refresh_t = t

    # ------------------------------------------------------------------- catalogue
    def add_arms(self, ids: Sequence[str], group: str, features: Any = None) -> np.ndarray:
        """Add merchants (or partners) while serving; returns their indices.

        New arms start from their group's prior and can be chosen by the next decision.
        Cost is proportional to the arms added; when the per-arm arrays must grow, they are
        copied in slices of :data:`GROW_SLICE` arms with decisions served between
        slices (learning that lands meanwhile is re-copied), so no decision waits for a
        whole-catalogue copy. All ids are checked before any is added.
        """
        ids = list(ids)
        feats = None if features is None else np.asarray(features, dtype=np.float64)
        with self._catalogue_lock:  # only catalogue changes write the registry
            engine = self._engine
            engine.registry.check_new(ids, group)
            if feats is not None and (feats.ndim != 2 or feats.shape[0] != len(ids)):
                raise InvalidInputError(
                    f"features has shape {feats.shape}, expected ({len(ids)}, n_arm_features)"
                )
            is_fresh = np.array([not engine.registry.knows(a) for a in ids], dtype=bool)
            fresh = int(is_fresh.sum())
            # every slice's features are checked now, so no slice can fail halfway
            engine.policy.check_arm_features(fresh, None if feats is None else feats[is_fresh])
            with self._lock:
                held = (time.perf_counter(), time.thread_time())
                engine.registry.reserve(engine.registry.n_arms + fresh)
                capacity = engine.registry.capacity
                self._note_hold(held)
            if capacity > engine.policy.state.capacity:
                self._grow_sliced(engine, capacity)
            out = []
            for lo in range(0, len(ids), ADD_SLICE):
                part = ids[lo : lo + ADD_SLICE]
                fpart = None
                with self._lock:
                    held = (time.perf_counter(), time.thread_time())
                    if feats is not None:
                        fpart = feats[lo : lo + ADD_SLICE][is_fresh[lo : lo + ADD_SLICE]]
                    out.append(self._engine.add_arms(part, group, fpart))
                    self._note_hold(held)
            return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _grow_sliced(self, engine: Engine, capacity: int) -> None:
        state = engine.policy.state
        with self._lock:
            rows = state.capacity
            self._touched = []
        grown = state.grown_arrays(capacity)
        # Nobody sees ``grown`` yet: fill it whole off the lock (fresh rows get their initial
        # values, and every page is touched here rather than under the lock).
        for lo in range(0, capacity, GROW_SLICE):
            state.fill_rows(grown, lo, min(capacity, lo + GROW_SLICE))
        try:
            for lo in range(0, rows, GROW_SLICE):
                with self._lock:
                    held = (time.perf_counter(), time.thread_time())
                    state.copy_rows(grown, lo, min(rows, lo + GROW_SLICE))
                    self._note_hold(held)
            contracts = engine.contracts.grown(capacity)
            with self._lock:
                held = (time.perf_counter(), time.thread_time())
                touched = np.unique(np.array(self._touched, dtype=np.int64))
                state.copy_arms(grown, touched)
                replaced = state.install(grown, capacity)
                replaced.append(engine.contracts.install_grown(contracts))
                self._note_hold(held)
            del replaced  # freed off the lock
        finally:
            with self._lock:
                self._touched = None

    def _note_hold(self, since: tuple[float, float]) -> None:
        wall, cpu = self._catalogue_hold
        self._catalogue_hold = (
            max(wall, time.perf_counter() - since[0]),
            max(cpu, time.thread_time() - since[1]),
        )

    def retire_arms(self, ids: Sequence[str]) -> np.ndarray:
        """Stop serving ``ids`` from the next decision on (learned state is kept)."""
        with self._catalogue_lock, self._lock:
            return self._engine.retire_arms(ids)

    # ------------------------------------------------------------- configuration
    def reconfigure(self, config: AllocatorConfig | str | Path) -> None:
        """Swap in a new configuration atomically, keeping what was learned.

        A staged engine (arm changes, new hyper-parameters adopting the running statistics,
        compiled contracts with unchanged constraints' queues) is built, then installed by
        plain assignments. Any error leaves the running allocator untouched. For adding or
        retiring arms while serving, :meth:`add_arms` / :meth:`retire_arms` are cheaper.
        """
        cfg = config if isinstance(config, AllocatorConfig) else load_allocator_config(config)
        with self._catalogue_lock, self._lock:
            engine = stage_engine(self._engine, self.config, cfg, self.seed)
            # commit: nothing below can fail
            self.config = cfg
            self._install(engine, self._pending)
            self._feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}
            self._pending.capacity = cfg.serving.pending_capacity

    # ---------------------------------------------------------------- fleet learning
    def export_delta(self) -> dict[str, np.ndarray]:
        """Sufficient statistics learned since the previous export (send to the learner)."""
        with self._lock:
            return self.policy.export_delta()

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Fold a replica's delta into this (learner) allocator's posterior (checked whole
        before anything changes)."""
        with self._catalogue_lock, self._lock:
            self.policy.merge(delta)

    def load_published(self, path: str | Path) -> None:
        """Adopt a learner's published snapshot without pausing decisions.

        The file is read and the learner's engine rebuilt outside the lock; only the swap
        happens under it. This replica keeps its own decision stream, pending decisions and
        contract queues, and its next :meth:`export_delta` starts from the adopted state.
        """
        arrays, meta = read_snapshot(path)
        ids = arrays["registry.ids"].tolist() if "registry.ids" in arrays else None
        with self._lock:
            mine = self.registry.all_ids()
        if ids is None or ids[: len(mine)] != mine[: len(ids)]:
            raise SnapshotError(f"published snapshot {path} has a different arm catalogue")
        published = restore_engine(
            self.config.engine.policy, self.config.constraints, self.seed, arrays, meta["policy"]
        )
        published.policy.export_delta()  # the adopted state is the new delta baseline
        with self._catalogue_lock, self._lock:
            published.policy.state.stream[:] = self.policy.state.stream
            published.contracts = self._engine.contracts
            published.contracts.reserve(published.registry.capacity, 0)
            self._install(published, self._pending)

    # --------------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        """Counters and gauges, including each constraint's share against its target."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["pending"] = len(self._pending)
            out["model_version"] = self.policy.version
            out["arms_active"] = int(self.registry.active.sum())
            out["catalogue_max_lock_s"], out["catalogue_max_lock_cpu_s"] = self._catalogue_hold
            reports = self._engine.report()
            out["backstops"] = sum(r.backstops for r in reports)
            out["constraints"] = {r.name: dataclasses.asdict(r) for r in reports}
            return out

    # ------------------------------------------------------------------- snapshots
    def snapshot_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Every array and meta value needed to resume exactly where this allocator is."""
        with self._lock:
            out, policy_meta = export_engine(self._engine)
            out.update(self._pending.to_arrays(self.policy.n_features))
            meta = {
                "schema": SNAPSHOT_SCHEMA,
                # the arm catalogue lives in the registry arrays, not in (slow) JSON
                "config": self.config.model_dump(mode="json", exclude={"arms"}),
                "seed": self.seed,
                "replica": self.replica,
                "policy": policy_meta,
                "counters": dict(self._counts),
                "next_id": self._next_id,
                "last_t": float(self._last_t),
                "last_refresh_t": float(self._last_refresh_t),
            }
            return out, meta

    def save(self, path: str | Path) -> None:
        """Write the whole state atomically (temp file, fsync, rename)."""
        with self._lock:
            arrays, meta = self.snapshot_state()
            write_snapshot(path, arrays, meta)
            self._counts["saves"] += 1

    @classmethod
    def load(
        cls, path: str | Path, *, clock: Callable[[], float] = time.time,
        log_dir: str | Path | None = None, log_rotate_rows: int = 100_000,
    ) -> Allocator:  # fmt: skip
        """Rebuild an allocator from :meth:`save`; it makes the decisions the original would."""
        arrays, meta = read_snapshot(path)
        if meta.get("schema") != SNAPSHOT_SCHEMA:
            raise SnapshotError(
                f"snapshot {path} has schema {meta.get('schema')}, expected {SNAPSHOT_SCHEMA}"
            )
        try:
            config = config_without_arms(meta["config"])
            seed = int(meta["seed"])
            engine = restore_engine(
                config.engine.policy, config.constraints, seed, arrays, meta["policy"]
            )
            pending = PendingTable.from_arrays(
                config.serving.pending_capacity, arrays, engine.policy.n_features is not None
            )
            out = cls.__new__(cls)
            out._setup(config, seed, str(meta["replica"]), clock, log_dir, log_rotate_rows)
            out._install(engine, pending)
            out._counts = {k: int(meta["counters"].get(k, 0)) for k in COUNTERS}
            out._next_id = int(meta["next_id"])
            out._last_t = float(meta["last_t"])
            out._last_refresh_t = float(meta["last_refresh_t"])
        except (KeyError, TypeError, ValueError) as err:
            raise SnapshotError(f"snapshot {path} is incomplete or inconsistent: {err}") from None
        return out
