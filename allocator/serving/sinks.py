"""What serving does when its decision log or its autosave fails: a policy, and counters.

``serving.on_log_error``:

- ``drop`` (default): decisions keep flowing. While the disk refuses parts, records stay
  buffered (retried every flush interval) up to the writer's ``max_buffered_rows``; beyond
  that they are dropped and counted. (A healthy but slow disk is not dropped from: the
  caller then writes the buffer itself.) Losing log rows costs offline evaluation some data;
  refusing decisions would cost the entry its traffic allocation, which is the business.
- ``raise``: while the writer's last part write failed, every decide / update / expire raises
  :class:`~allocator.errors.DecisionLogError` before touching any state, so a decision is
  either made and logged or not made at all. It recovers by itself once a part is written.

``serving.on_autosave_error``:

- ``skip`` (default): the failed autosave is counted and retried at the next interval; the
  decision log still records everything since the last good snapshot.
- ``raise``: the call that ran the autosave completes (its decision is made and logged);
  every later call raises :class:`~allocator.errors.AutosaveError`, with nothing changed,
  until a :meth:`~allocator.serving.Allocator.save` succeeds or autosave is set again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import pyarrow as pa

from allocator.errors import (
    AllocatorError,
    AutosaveError,
    DecisionLogError,
    InvalidInputError,
    brief,
)
from allocator.inputs import is_utf8
from allocator.logs import DecisionLogWriter, OutcomeRecord
from allocator.logs.indexed import IndexedDecision


def check_log_fields(request_id: Any, attrs: Any) -> None:
    """The request fields only the log reads, checked before a decision is made (a bad one
    found by the log afterwards would leave the decision made but unlogged). Strings must
    be UTF-8 text: a lone surrogate would fail the log's conversion, after the decision."""
    if request_id is not None and not (isinstance(request_id, str) and is_utf8(request_id)):
        raise InvalidInputError(
            f"request_id = {brief(request_id)}: expected a string (UTF-8 text) or None"
        )
    if attrs is not None:
        if not isinstance(attrs, Mapping):
            raise InvalidInputError(f"attrs = {brief(attrs)}: expected a mapping of strings")
        for key, value in attrs.items():
            if not (isinstance(key, str) and isinstance(value, str) and is_utf8(key + value)):
                raise InvalidInputError(
                    f"attrs[{brief(key)}] = {brief(value)}: expected string keys and values "
                    "(UTF-8 text)"
                )


def check_batch_log_fields(request_ids: Sequence[Any], attrs: Sequence[Any], plain: bool) -> None:
    """:func:`check_log_fields` of every request of a batch, naming the first bad one. A
    ``plain`` batch (request ids str or None, attrs None or dicts of str: their types are
    checked already) is checked whole, by one join and one encode, and request by request
    only if that fails."""
    if plain:
        pairs = chain.from_iterable(map(dict.items, filter(None, attrs)))
        if is_utf8("".join(chain(filter(None, request_ids), chain.from_iterable(pairs)))):
            return
    for i, (request_id, fields) in enumerate(zip(request_ids, attrs, strict=True)):
        try:
            check_log_fields(request_id, fields)
        except InvalidInputError as err:
            raise InvalidInputError(f"requests[{i}]: {err}") from None


class LogSink:
    """The allocator's decision log under ``serving.on_log_error`` (read on every call, so
    a reconfiguration applies at once)."""

    def __init__(self, writer: DecisionLogWriter, policy: Callable[[], str]) -> None:
        self.writer = writer
        self._policy = policy
        self.dropped = 0
        self.refused = 0

    def admit(self) -> None:
        """Under ``raise``, refuse the coming call (nothing changed yet) if the log cannot
        take its records."""
        w = self.writer
        if self._policy() == "raise" and not w.healthy:
            self.refused += 1
            raise DecisionLogError(
                f"decision log {w.directory} is failing ({w.last_error}); "
                "serving.on_log_error = raise refuses calls until a part is written"
            )

    def _accepts(self) -> bool:
        w = self.writer
        if not w.healthy and w.full and self._policy() == "drop":  # cheapest test first
            self.dropped += 1
            return False
        return True

    # The allocator builds these records from inputs it has already checked (request_id
    # and attrs by :func:`check_log_fields`): the writer does not check them again.
    def write_decision(self, row: IndexedDecision) -> None:
        if self._accepts():
            self.writer.write_indexed_decision(row)

    def write_decision_rows(self, table: pa.Table) -> None:
        """A batch's decisions as one table (see :mod:`allocator.serving.log_rows`); under
        ``drop`` with a full buffer every row of it is dropped and counted."""
        if self._accepts():
            self.writer.write_rows("decisions", table)
        else:
            self.dropped += table.num_rows - 1

    def write_outcome_rows(self, table: pa.Table) -> None:
        """Outcomes as one table, as :meth:`write_decision_rows`."""
        if self._accepts():
            self.writer.write_rows("outcomes", table)
        else:
            self.dropped += table.num_rows - 1

    def write_outcome(self, record: OutcomeRecord) -> None:
        if self._accepts():
            self.writer.write_outcome(record, validated=True)

    def close(self) -> None:
        self.writer.close()


def log_metrics(sink: LogSink | None) -> dict[str, Any]:
    """Counters of the log's condition (zeros without a log)."""
    w = None if sink is None else sink.writer
    return {
        "log_errors": 0 if w is None else w.errors,
        "log_dropped": 0 if sink is None else sink.dropped,
        "log_refused": 0 if sink is None else sink.refused,
        "log_buffered_rows": 0 if w is None else w.buffered_rows,
        "log_healthy": True if w is None else w.healthy,
        "log_last_error": None if w is None else w.last_error,
    }


class Autosaver:
    """Saves at most every ``every_s`` seconds of traffic time, under
    ``serving.on_autosave_error``."""

    def __init__(self, policy: Callable[[], str]) -> None:
        self._policy = policy
        self.path: Path | None = None
        self.every_s = 300.0
        self._last_t = -math.inf
        self.errors = 0
        self.last_error: str | None = None
        self.failed = False

    def set(self, path: str | Path | None, every_s: float) -> None:
        if path is not None and not (
            isinstance(every_s, int | float) and math.isfinite(every_s) and every_s > 0
        ):
            raise InvalidInputError(f"autosave_every_s = {every_s!r}: expected a positive number")
        self.path = None if path is None else Path(path)
        self.every_s = float(every_s)
        self._last_t = -math.inf
        self.failed = False

    def admit(self) -> None:
        """Under ``raise``, refuse calls (nothing changed) after a failed autosave."""
        if self.failed and self._policy() == "raise":
            raise AutosaveError(
                f"autosave to {self.path} failed ({self.last_error}); serving.on_autosave_error "
                "= raise refuses calls until a save succeeds"
            )

    def tick(self, t: float, save: Callable[[Path], None]) -> None:
        """Save if an interval has passed since the last attempt (the first call only
        starts the clock)."""
        if self.path is None or t - self._last_t < self.every_s:
            return
        first = not math.isfinite(self._last_t)
        self._last_t = t
        if first:
            return
        try:
            save(self.path)
        except (OSError, AllocatorError) as err:
            self.errors += 1
            self.last_error = f"{type(err).__name__}: {err}"
            self.failed = True

    def saved(self) -> None:
        """A save succeeded: the condition clears."""
        self.failed = False

    def metrics(self) -> dict[str, Any]:
        return {"autosave_errors": self.errors, "autosave_last_error": self.last_error}
