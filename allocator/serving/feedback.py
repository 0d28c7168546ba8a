"""The feedback half of the serving facade: outcomes, expiry and housekeeping.

Split from :mod:`.allocator` so deciding and learning read on their own. Outcomes are
parsed and checked before the lock is taken; a pending entry goes only once the policy
accepted its outcome, so a refused outcome changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from allocator.errors import InvalidInputError, brief
from allocator.logs import OutcomeRecord
from allocator.objective import Objective
from allocator.serving.catalogue import CatalogueChanges
from allocator.serving.clock import ServingClock
from allocator.serving.config import AllocatorConfig, Outcome
from allocator.serving.log_rows import outcome_rows
from allocator.serving.pending import Pending, PendingTable
from allocator.serving.persistence import Books
from allocator.serving.sinks import Autosaver, LogSink


class UpdateStatus(StrEnum):
    """What became of one outcome given to :meth:`FeedbackCalls.update`."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # feedback for a decision already learned (or expired): ignored
    UNKNOWN = "unknown"  # never issued here, or forgotten: ignored and counted


class FeedbackCalls:
    """The feedback calls of :class:`~allocator.serving.Allocator` (its only host), which
    sets up the attributes below and provides ``policy``, ``_admit`` and ``save``."""

    config: AllocatorConfig
    _lock: threading.RLock
    _time: ServingClock
    _books: Books
    _pending: PendingTable
    _objective: Objective
    _catalogue: CatalogueChanges
    _log: LogSink | None
    _autosaver: Autosaver
    _weighed: frozenset[str]

    if TYPE_CHECKING:

        @property
        def policy(self) -> Any: ...

        def _admit(self, request_id: Any = None, attrs: Any = None) -> None: ...

        def _count(self, name: str) -> None: ...

        def _commit_time(self, mode: str) -> None: ...

        def save(self, path: Any) -> None: ...

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
        if self.policy.LEARNS_EVENTS:  # the events themselves are what it learns
            self.policy.check_outcomes(
                [outcome.click], [outcome.order], [outcome.gmv], np.array([reward]), "reward"
            )
            return reward
        return self.policy.check_reward(reward, "reward")

    def _learn(
        self, decision_id: str | None, entry: Pending, outcome: Outcome, t: float,
        source: str = "feedback", reward: float | None = None, row: int = -1,
    ) -> None:  # fmt: skip
        """Apply one outcome; the pending entry goes only once the policy accepted it. The
        id may be None when ``row`` is given (it is then spelled only for the log)."""
        policy = self.policy
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
        logged = decision_id
        if self._log is not None and logged is None:
            logged = self._pending.row(row)[0]
        self._pending.settle(decision_id, row)
        if self._log is not None and logged is not None:
            self._log.write_outcome(OutcomeRecord(
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
