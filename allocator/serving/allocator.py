"""The embedded serving facade: decide, learn from delayed feedback, snapshot, reload.

Locking model: one re-entrant mutex per allocator serialises every operation that reads
or writes learned state (decide, update, expiry, refresh, save, reconfigure, merge). Work
that needs no state (parsing outcomes, reading a snapshot file, compiling a new
configuration) happens before the lock is taken, and the numba kernels run without the
GIL, so other Python threads of the serving process keep running during a decision.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import ValidationError

from allocator.config import EngineConfig
from allocator.constraints import ConstrainedPolicy
from allocator.constraints.config import ConstraintSet
from allocator.constraints.layer import as_epoch_seconds
from allocator.errors import InvalidInputError, SnapshotError
from allocator.logs import DecisionLogWriter, DecisionRecord, OutcomeRecord
from allocator.objective import Objective
from allocator.policies import POLICY_CLASSES, Policy, make_policy
from allocator.registry import ArmRegistry
from allocator.serving.config import (
    AllocatorConfig,
    Outcome,
    ServingConfig,
    load_allocator_config,
)
from allocator.serving.pending import Pending, PendingTable
from allocator.snapshot import read_snapshot, write_snapshot

SNAPSHOT_SCHEMA = 1


class Decision(NamedTuple):
    """What the serving layer shows and logs for one impression."""

    decision_id: str
    arm_id: str
    arm_index: int
    group: str
    propensity: float
    forced: bool
    forced_by: str | None
    adjusted_by: tuple[str, ...]
    model_version: int
    timestamp: float
    request_id: str | None


class UpdateStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # feedback for a decision already learned (or expired): ignored
    UNKNOWN = "unknown"  # never issued here, or forgotten: ignored and counted


COUNTERS = (
    "decisions", "updates", "duplicates", "unknown", "expired", "evicted", "rejected",
    "refreshes", "saves",
)  # fmt: skip


def _build_registry(config: AllocatorConfig) -> ArmRegistry:
    registry = ArmRegistry(capacity=max(16, len(config.arms)))
    start = 0
    arms = config.arms
    for i in range(1, len(arms) + 1):  # consecutive runs of one group in one call
        if i == len(arms) or arms[i].group != arms[start].group:
            registry.add([a.id for a in arms[start:i]], arms[start].group)
            start = i
    return registry


def _arm_features(config: AllocatorConfig, arms: Sequence[Any]) -> np.ndarray | None:
    if config.engine.policy.kind != "shared_linear":
        return None
    return np.array([a.features for a in arms], dtype=np.float64)


def _config_without_arms(data: Mapping[str, Any]) -> AllocatorConfig:
    """A saved configuration: its parts are validated, its arms come from the registry.

    The whole config was validated (arms included) when the allocator was built; a
    restored allocator's ``config.arms`` is empty and :attr:`Allocator.registry` holds the
    catalogue, so catalogues of millions of merchants load in array time.
    """
    return AllocatorConfig.model_construct(
        engine=EngineConfig.model_validate(data["engine"]),
        constraints=ConstraintSet.model_validate(data["constraints"]),
        serving=ServingConfig.model_validate(data["serving"]),
        arms=[],
    )


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
        self.set_autosave(autosave_path, autosave_every_s)
        self._log = None if log_dir is None else DecisionLogWriter(log_dir, log_rotate_rows)
        self.config = cfg
        self.seed = seed
        self.replica = replica
        self._clock = clock
        self._lock = threading.RLock()
        self._registry = _build_registry(cfg)
        policy = make_policy(
            cfg.engine.policy, self._registry, seed, arm_features=_arm_features(cfg, cfg.arms)
        )
        self._engine = ConstrainedPolicy(policy, cfg.constraints)
        self._objective = Objective(cfg.engine.objective, self._registry)
        self._pending = PendingTable(cfg.serving.pending_capacity)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._next_id = 0
        self._last_t = -np.inf
        self._last_refresh_t = -np.inf
        self._feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}

    # ------------------------------------------------------------------ properties
    @property
    def registry(self) -> ArmRegistry:
        return self._registry

    @property
    def policy(self) -> Policy:
        return self._engine.policy

    def warmup(self) -> None:
        """Compile every kernel of the decision and update paths now, not on first traffic."""
        with self._lock:
            state = self.snapshot_state()
            cand = np.flatnonzero(self._registry.active[: self._registry.n_arms])[:2]
            x = None if self.policy.n_features is None else np.zeros(self.policy.n_features)
            t0 = float(self._last_t) if np.isfinite(self._last_t) else 0.0
            choice = self._engine.decide(cand, x, None, t0)
            self.policy.update(choice.arm, 0.0, x)
            self.policy.decide_batch(
                np.array([0, cand.size]), cand, None if x is None else x[None, :]
            )
            self.policy.update_batch(cand[:1], np.zeros(1), None if x is None else x[None, :])
            self.policy.refresh()
            self._restore_state(*state)

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
            if isinstance(candidates, np.ndarray) and candidates.dtype.kind in "iu":
                cand = candidates
            else:
                cand = self._registry.lookup(list(candidates))
            x = self._resolve_context(context)
            with self._lock:
                if t < self._last_t - self.config.serving.max_clock_skew_s:
                    raise InvalidInputError(
                        f"timestamp {t} is {self._last_t - t:.3f} s before the latest decision: "
                        f"more than max_clock_skew_s = {self.config.serving.max_clock_skew_s}"
                    )
                self._housekeep(t)
                choice = self._engine.decide(cand, x, attrs, t)
                decision_id = f"{self.replica}-{self._next_id:x}"
                self._next_id += 1
                self._last_t = max(self._last_t, t)
                evicted = self._pending.add(
                    decision_id, Pending(choice.arm, t, None if x is None else x.copy())
                )
                if evicted is not None:
                    self._counts["evicted"] += 1
                    self._learn_default(*evicted, t)
                self._counts["decisions"] += 1
                registry = self._registry
                if self._log is not None:
                    self._log_decision(decision_id, request_id, t, cand, choice, x, attrs)
                return Decision(
                    decision_id, registry.arm_id(choice.arm), choice.arm,
                    registry.group_of(choice.arm), choice.propensity, choice.forced,
                    choice.forced_by, choice.adjusted_by, self.policy.version, t, request_id,
                )  # fmt: skip
        except Exception:
            self._count("rejected")
            raise

    def decide_many(self, requests: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Decide for each request mapping (keys: the arguments of :meth:`decide`)."""
        with self._lock:
            return [self.decide(**req) for req in requests]

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _resolve_context(self, context: Any) -> np.ndarray | None:
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
        self, decision_id: str, request_id: str | None, t: float, cand: np.ndarray,
        choice: Any, x: np.ndarray | None, attrs: Mapping[str, str] | None,
    ) -> None:  # fmt: skip
        """One row of the decision log (the candidate ids cost O(C) in Python: logging only)."""
        registry = self._registry
        assert self._log is not None
        self._log.write_decision(DecisionRecord(
            decision_id=decision_id, request_id=request_id, timestamp=t,
            arm_id=registry.arm_id(choice.arm), arm_index=choice.arm,
            group=registry.group_of(choice.arm), propensity=choice.propensity,
            forced=choice.forced, model_version=self.policy.version,
            policy_kind=self.config.engine.policy.kind,
            candidates=[registry.arm_id(int(a)) for a in cand],
            candidate_probabilities=self._engine.probabilities,
            context=None if x is None else np.asarray(x, dtype=np.float64),
            attrs=dict(attrs or {}), adjusted_by=choice.adjusted_by,
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
            if self.policy._pending:
                self.policy.refresh()
                self._counts["refreshes"] += 1
            self._last_refresh_t = t

    # ------------------------------------------------------------- configuration
    def reconfigure(self, config: AllocatorConfig | str | Path) -> None:
        """Swap in a new configuration atomically, keeping what was learned.

        Everything is built on the side first — a staged registry with the arm changes,
        a policy with the new hyper-parameters that adopts the running one's statistics,
        the compiled contract set with unchanged constraints' queues carried over — and
        installed by plain assignments under the lock. Any error leaves the running
        allocator untouched. Arms missing from the new config are retired, new ones added;
        changing the policy kind or its dimensions is refused (it would discard learning).
        """
        cfg = config if isinstance(config, AllocatorConfig) else load_allocator_config(config)
        old = self.config
        if cfg.engine.policy.kind != old.engine.policy.kind:
            raise InvalidInputError(
                f"policy kind {old.engine.policy.kind!r} → {cfg.engine.policy.kind!r} would "
                "discard the learned state: build a new Allocator instead"
            )
        with self._lock:
            registry = self._registry.copy()
            keep = {a.id for a in cfg.arms}
            retired = [i for i in registry.members_all() if i not in keep]
            registry.retire(retired)
            for arm in cfg.arms:
                known = registry._index.get(arm.id)
                if known is not None and registry.group_of(known) != arm.group:
                    raise InvalidInputError(
                        f"arms: {arm.id!r} was registered in group "
                        f"{registry.group_of(known)!r}, cannot move to {arm.group!r}"
                    )
                if not self._is_active(registry, arm.id):
                    registry.add([arm.id], arm.group)
            running = self.policy
            if (
                cfg.engine.policy == old.engine.policy
                and registry.n_arms == running.registry.n_arms
            ):
                policy = running
                policy.registry = registry
            else:
                features = None
                if cfg.engine.policy.kind == "shared_linear":
                    given = {a.id: a.features for a in cfg.arms}
                    old_features = self.policy._features  # type: ignore[attr-defined]
                    features = np.array([
                        given[arm_id] if arm_id in given else old_features[i]
                        for i, arm_id in enumerate(registry.all_ids())
                    ])  # fmt: skip
                policy = make_policy(cfg.engine.policy, registry, self.seed, arm_features=features)
                policy._stream[:] = running._stream
                policy.adopt_learned(running)
            engine = ConstrainedPolicy(policy, cfg.constraints)
            engine.carry_from(self._engine)
            # commit: nothing below can fail
            self._registry = registry
            self._engine = engine
            self._objective = Objective(cfg.engine.objective, registry)
            self._feature_index = {n: i for i, n in enumerate(cfg.serving.feature_names or [])}
            self._pending.capacity = cfg.serving.pending_capacity
            self.config = cfg

    @staticmethod
    def _is_active(registry: ArmRegistry, arm_id: str) -> bool:
        idx = registry._index.get(arm_id)
        return idx is not None and bool(registry.active[idx])

    # ---------------------------------------------------------------- fleet learning
    def export_delta(self) -> dict[str, np.ndarray]:
        """Sufficient statistics learned since the previous export (send to the learner)."""
        with self._lock:
            return self.policy.export_delta()

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Fold a replica's delta into this (learner) allocator's posterior."""
        with self._lock:
            self.policy.merge(delta)

    def load_published(self, path: str | Path) -> None:
        """Adopt a learner's published snapshot without pausing decisions.

        The file is read and the learner's policy rebuilt outside the lock; only the swap
        happens under it. This replica keeps its own decision stream, pending decisions
        and contract queues, and its next :meth:`export_delta` starts from the adopted state.
        """
        arrays, meta = read_snapshot(path)
        ids = arrays["registry.ids"].tolist()
        with self._lock:
            mine = self._registry.all_ids()
        if ids[: len(mine)] != mine[: len(ids)]:
            raise SnapshotError(f"published snapshot {path} has a different arm catalogue")
        policy_arrays = {
            k[len("policy.") :]: v for k, v in arrays.items() if k.startswith("policy.")
        }
        cls = POLICY_CLASSES[self.config.engine.policy.kind]
        published = cls.restore(
            self.config.engine.policy, self._registry, self.seed, policy_arrays, meta["policy"]
        )
        published.export_delta()  # the adopted state is the new delta baseline
        with self._lock:
            published._stream[:] = self.policy._stream
            self._engine.replace_policy(published)

    # --------------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        """Counters and gauges, including each constraint's share against its target."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["pending"] = len(self._pending)
            out["model_version"] = self.policy.version
            out["arms_active"] = int(self._registry.active.sum())
            reports = self._engine.report()
            out["backstops"] = sum(r.backstops for r in reports)
            out["constraints"] = {r.name: dataclasses.asdict(r) for r in reports}
            return out

    # ------------------------------------------------------------------- snapshots
    def snapshot_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Every array and meta value needed to resume exactly where this allocator is."""
        with self._lock:
            arrays, policy_meta = self.policy.export_state()
            out = {f"policy.{k}": v for k, v in arrays.items()}
            out.update(self._registry.to_arrays())
            out.update(self._engine.export_state())
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
            config = _config_without_arms(meta["config"])
            out = cls.__new__(cls)
            out.config = config
            out.seed = int(meta["seed"])
            out.replica = str(meta["replica"])
            out._clock = clock
            out._lock = threading.RLock()
            out._log = None if log_dir is None else DecisionLogWriter(log_dir, log_rotate_rows)
            out.set_autosave(None)
            out._feature_index = {n: i for i, n in enumerate(config.serving.feature_names or [])}
            out._restore_state(arrays, meta)
        except (KeyError, TypeError, ValueError) as err:
            raise SnapshotError(f"snapshot {path} is incomplete or inconsistent: {err}") from None
        return out

    def _restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        registry = ArmRegistry.from_arrays(arrays)
        policy_arrays = {
            k[len("policy.") :]: v for k, v in arrays.items() if k.startswith("policy.")
        }
        cls = POLICY_CLASSES[self.config.engine.policy.kind]
        policy = cls.restore(
            self.config.engine.policy, registry, self.seed, policy_arrays, meta["policy"]
        )
        engine = ConstrainedPolicy(policy, self.config.constraints)
        engine.restore_state(arrays)
        self._registry = registry
        self._engine = engine
        self._objective = Objective(self.config.engine.objective, registry)
        self._pending = PendingTable.from_arrays(
            self.config.serving.pending_capacity, arrays, policy.n_features is not None
        )
        self._counts = {k: int(meta["counters"].get(k, 0)) for k in COUNTERS}
        self._next_id = int(meta["next_id"])
        self._last_t = float(meta["last_t"])
        self._last_refresh_t = float(meta["last_refresh_t"])
