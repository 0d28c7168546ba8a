"""The outcome side of serving: decisions waiting for feedback, and what they learn.

A decision is registered as pending; its outcome arrives later (:meth:`Outcomes.update`),
or never, and then it learns ``serving.default_outcome`` once it is older than
``serving.reward_wait_s`` or pushed out by ``serving.pending_capacity``. Every outcome is
checked (fields, reward domain) before anything is learned, and a pending entry goes only
once the policy accepted its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from allocator.errors import InvalidInputError, brief
from allocator.logs import OutcomeRecord
from allocator.serving.config import Outcome
from allocator.serving.log_rows import outcome_rows
from allocator.serving.pending import Pending
from allocator.serving.state import ServingState


class UpdateStatus(StrEnum):
    """What became of one outcome given to :meth:`Allocator.update`."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # feedback for a decision already learned (or expired): ignored
    UNKNOWN = "unknown"  # never issued here, or forgotten: ignored and counted


class Outcomes:
    """Pending decisions and the learning of their outcomes, over the facade's state.

    ``save`` is the facade's save, called when an autosave falls due while housekeeping.
    """

    def __init__(self, state: ServingState, save: Callable[[str | Path], None]) -> None:
        self.state = state
        self.save = save

    def register(
        self, head: str, first: int, arms: np.ndarray, times: np.ndarray, xs: np.ndarray | None
    ) -> None:
        """Pending entries for decisions ``<head>-<first + k>`` in one slice; the oldest
        over the capacity learn the default outcome (logged at the time of the decision
        whose registration pushed them out, as one-by-one registration would)."""
        s = self.state
        before = len(s.pending)
        s.pending.add_many(head, first, arms, times, xs)
        s.books.counts["decisions"] += arms.shape[0]
        rows = s.pending.over_capacity()
        if rows.size:
            s.books.counts["evicted"] += rows.size
            at = max(0, s.pending.capacity - before) + np.arange(rows.size)
            self.learn_defaults(rows, times[np.minimum(at, arms.shape[0] - 1)])

    def register_one(
        self, head: str, counter: int, arm: int, t: float, x: np.ndarray | None
    ) -> None:
        """:meth:`register` for one decision (no arrays built unless one is evicted)."""
        s = self.state
        pending = s.pending
        pending.add_one(head, counter, arm, t, x)
        s.books.counts["decisions"] += 1
        if len(pending) > pending.capacity:
            self.evict(t)

    def evict(self, t: float) -> None:
        """The default outcome for the oldest decisions over the pending capacity."""
        rows = self.state.pending.over_capacity()
        if rows.size:
            self.state.books.counts["evicted"] += rows.size
            self.learn_defaults(rows, np.full(rows.size, t))

    def update(self, decision_id: str, outcome: Any, timestamp: Any) -> UpdateStatus:
        """:meth:`Allocator.update`."""
        s = self.state
        try:
            check_decision_id(decision_id, "decision_id")
            result = parse_outcome(outcome, "outcome", s.weighed)
        except InvalidInputError:
            s.count("rejected")
            raise
        with s.lock:
            s.admit()
            try:
                t, mode = s.time.time_of(timestamp, "update", s.books.last_t, True)
                row = s.pending.find(decision_id)
                if row >= 0:
                    entry = s.pending.entry(row)
                    reward = self._reward(entry.arm, result)
            except InvalidInputError:
                s.books.counts["rejected"] += 1
                raise
            s.commit_time(mode)
            if row < 0:
                return self._not_pending(decision_id)
            self._learn(decision_id, entry, result, t, reward=reward, row=row)
            s.books.counts["updates"] += 1
            self.housekeep(t)
            return UpdateStatus.APPLIED

    def update_many(self, feedback: Sequence[tuple[str, Any]]) -> list[UpdateStatus]:
        """:meth:`Allocator.update_many`."""
        s = self.state
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
                outcome = parse_outcome(item[1], f"feedback[{i}].outcome", s.weighed)
                parsed.append((item[0], outcome))
        except InvalidInputError:
            s.count("rejected")
            raise
        with s.lock:
            s.admit()
            try:
                t, mode = s.time.time_of(None, "update_many", s.books.last_t, True)
                plan: list[tuple[int, str, Pending, Outcome, float]] = []
                seen: set[str] = set()
                for i, (decision_id, result) in enumerate(parsed):
                    entry = None if decision_id in seen else s.pending.get(decision_id)
                    if entry is not None:
                        seen.add(decision_id)
                        reward = s.objective.reward_one(
                            entry.arm, result.click, result.order, result.gmv
                        )
                        plan.append((i, decision_id, entry, result, reward))
                if plan:
                    s.engine.policy.check_outcomes(
                        [p[3].click for p in plan], [p[3].order for p in plan],
                        [p[3].gmv for p in plan], np.array([p[4] for p in plan]), "rewards",
                    )  # fmt: skip
            except InvalidInputError as err:
                s.books.counts["rejected"] += 1
                raise InvalidInputError(f"update_many, nothing applied: {err}") from None
            s.commit_time(mode)
            statuses = [UpdateStatus.UNKNOWN] * len(parsed)
            planned = {i for i, *_ in plan}
            for i, decision_id, entry, result, reward in plan:
                self._learn(decision_id, entry, result, t, reward=reward)
                s.books.counts["updates"] += 1
                statuses[i] = UpdateStatus.APPLIED
            for i, (decision_id, _) in enumerate(parsed):
                if i not in planned:
                    statuses[i] = self._not_pending(decision_id)
            self.housekeep(t)
            return statuses

    def _not_pending(self, decision_id: str) -> UpdateStatus:
        """Status of feedback for a decision that is not waiting (counted)."""
        s = self.state
        if s.pending.was_finished(decision_id):
            s.books.counts["duplicates"] += 1
            return UpdateStatus.DUPLICATE
        s.books.counts["unknown"] += 1
        return UpdateStatus.UNKNOWN

    def expire(self, now: Any) -> int:
        """:meth:`Allocator.expire`."""
        s = self.state
        with s.lock:
            s.admit()
            t, mode = s.time.time_of(now, "expire", s.books.last_t, True)
            s.commit_time(mode)
            return self._expire(t)

    def _reward(self, arm: int, outcome: Outcome) -> float:
        """The checked reward of ``outcome`` for ``arm`` (InvalidInputError outside the
        policy's domain)."""
        s = self.state
        reward = s.objective.reward_one(arm, outcome.click, outcome.order, outcome.gmv)
        policy = s.engine.policy
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
        s = self.state
        policy = s.engine.policy
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
            s.books.counts["refreshes"] += 1
        s.catalogue.learned(entry.arm)
        log, logged = s.log, decision_id
        if log is not None and logged is None:
            logged = s.pending.id_of(row)
        s.pending.settle(decision_id, row)
        if log is not None and logged is not None:
            log.write_outcome(OutcomeRecord(
                decision_id=logged, timestamp=t, click=outcome.click, order=outcome.order,
                gmv=outcome.gmv, reward=reward, source=source,  # type: ignore[arg-type]
            ))  # fmt: skip

    def _learn_default(self, row: int, t: float) -> None:
        """The default outcome for the pending decision at ``row`` (the one-row path of
        expiry and eviction: no id is spelled unless the log needs it)."""
        s = self.state
        o = s.config.serving.default_outcome
        self._learn(None, s.pending.entry(row), o, t, "expired_default", row=row)

    def learn_defaults(self, rows: np.ndarray, log_times: np.ndarray) -> None:
        """The default outcome for pending ``rows``, learned as one batch (the policy's
        refresh cadence is checked once, after it) and logged as one table; the rows go
        only once the policy accepted them. One row takes the scalar path (cheaper)."""
        if rows.size == 1:
            self._learn_default(int(rows[0]), float(log_times[0]))
            return
        s = self.state
        o = s.config.serving.default_outcome
        entries = s.pending.entries(rows)
        rewards = s.objective.reward(entries.arms, o.click, o.order, o.gmv)
        policy = s.engine.policy
        version = policy.version
        n = entries.arms.shape[0]
        policy.learn_outcomes(
            entries.arms, np.full(n, o.click), np.full(n, o.order), np.full(n, o.gmv), rewards,
            entries.contexts,
        )  # fmt: skip
        if policy.version != version:
            s.books.counts["refreshes"] += 1
        s.catalogue.learned_many(entries.arms)
        s.pending.finish_rows(rows)
        if s.log is not None:
            s.log.write_outcome_rows(
                outcome_rows(entries.ids, log_times, o, rewards, "expired_default")
            )

    def _expire(self, t: float) -> int:
        s = self.state
        deadline = t - s.config.serving.reward_wait_s
        row = s.pending.due_one(deadline)
        if row == -1:
            return 0
        if row >= 0:  # one decision a call: the steady state of serving
            self._learn_default(row, t)
            n = 1
        else:
            rows = s.pending.expired(deadline)
            n = rows.shape[0]
            self.learn_defaults(rows, np.full(n, t))
        s.books.counts["expired"] += n
        return n

    def housekeep(self, t: float) -> None:
        """What falls due at serving time ``t``: expiries, an autosave, a timed refresh."""
        s = self.state
        self._expire(t)
        s.autosaver.tick(t, self.save)
        every = s.config.serving.refresh_every_s
        if every is not None and t - s.books.last_refresh_t >= every:
            policy = s.engine.policy
            if policy.pending_updates:
                policy.refresh()
                s.books.counts["refreshes"] += 1
            s.books.last_refresh_t = t


def check_decision_id(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where} must be a string, got {brief(value)}")


def parse_outcome(outcome: Any, where: str, weighed: frozenset[str]) -> Outcome:
    """An :class:`Outcome` from a mapping, or a typed error naming the field.

    It must carry at least one field the objective weighs (``weighed``): an outcome without
    one would silently teach a reward of 0.
    """
    if isinstance(outcome, Outcome):  # re-checked: model_construct() validates nothing
        outcome = {name: getattr(outcome, name) for name in outcome.model_fields_set}
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
