"""Buffered, rotating, atomic writer of the decision log.

Records are validated on arrival, buffered in memory per stream, and written as a new
Parquet part when a buffer holds ``rotate_rows`` rows or its first row is ``rotate_seconds``
old. Age is checked on every write, :meth:`~DecisionLogWriter.flush` and
:meth:`~DecisionLogWriter.close` (the writer owns no timer thread), so an idle writer keeps
its rows in memory until the next call.

A part is written to a hidden temporary name in the log directory, fsynced, then renamed
into place, so readers see whole parts or nothing. Part names sort in write order:
``<kind>-<UTC yyyymmddTHHMMSS>-<seq:06d>.parquet``, with a sequence number that continues
the largest one already in the directory and a timestamp that never goes backwards within
one writer. One writer per directory: two processes writing the same directory could race
for a name.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from allocator.errors import AllocatorError, InvalidInputError
from allocator.logs.schema import (
    KINDS,
    DecisionRecord,
    Kind,
    OutcomeRecord,
    check_decision,
    check_outcome,
    decisions_table,
    file_metadata,
    outcomes_table,
)
from allocator.logs.tables import check_table

PART_NAME: Final = re.compile(r"^(decisions|outcomes)-(\d{8}T\d{6})-(\d{6,})\.parquet$")
_COMPRESSION: Final = "zstd"


def part_name(kind: Kind, epoch_seconds: float, seq: int) -> str:
    """File name of a log part written at ``epoch_seconds`` with sequence number ``seq``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(epoch_seconds))
    return f"{kind}-{stamp}-{seq:06d}.parquet"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_part(directory: Path, name: str, table: pa.Table) -> None:
    tmp = directory / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression=_COMPRESSION)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(directory)


class DecisionLogWriter:
    """Append decisions and outcomes to the log in ``directory`` (created if missing).

    Thread-safe: every method takes one lock, and a rotation writes its part while holding
    it, so concurrent writers wait for the disk during a rotation. A rejected record raises
    :class:`InvalidInputError` and leaves the writer unchanged. If writing a part fails
    (disk full), its rows stay buffered and the error propagates; the next write,
    :meth:`flush` or :meth:`close` retries.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        rotate_rows: int = 100_000,
        rotate_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(rotate_rows, bool) or not isinstance(rotate_rows, int) or rotate_rows < 1:
            raise InvalidInputError(f"rotate_rows = {rotate_rows!r}: expected an integer >= 1")
        if rotate_seconds is not None and not (
            isinstance(rotate_seconds, int | float)
            and math.isfinite(rotate_seconds)
            and rotate_seconds > 0
        ):
            raise InvalidInputError(
                f"rotate_seconds = {rotate_seconds!r}: expected None or a finite number > 0"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_rows = rotate_rows
        self.rotate_seconds = None if rotate_seconds is None else float(rotate_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._buffers: dict[Kind, list[Any]] = {kind: [] for kind in KINDS}
        self._first_at: dict[Kind, float] = {}
        self._last_stamp = -math.inf
        self._seq = 1 + max(
            (int(m.group(3)) for p in self.directory.iterdir() if (m := PART_NAME.match(p.name))),
            default=-1,
        )
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def write_decision(self, record: DecisionRecord) -> None:
        """Validate and buffer one decision; may write a part (see the class docstring)."""
        check_decision(record)
        self._append("decisions", record)

    def write_outcome(self, record: OutcomeRecord) -> None:
        """Validate and buffer one outcome; may write a part (see the class docstring)."""
        check_outcome(record)
        self._append("outcomes", record)

    def write_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Validate every record, then buffer them all (none if any is invalid)."""
        for i, record in enumerate(records):
            try:
                check_decision(record)
            except InvalidInputError as err:
                raise InvalidInputError(f"records[{i}]: {err}") from None
        self._append("decisions", *records)

    def write_outcomes(self, records: Sequence[OutcomeRecord]) -> None:
        """Validate every record, then buffer them all (none if any is invalid)."""
        for i, record in enumerate(records):
            try:
                check_outcome(record)
            except InvalidInputError as err:
                raise InvalidInputError(f"records[{i}]: {err}") from None
        self._append("outcomes", *records)

    def write_table(self, kind: Kind, table: pa.Table) -> None:
        """Validate a whole Arrow table of ``kind`` column-wise (:func:`check_table`) and
        write it at once, as parts of at most ``rotate_rows`` rows, after any buffered rows
        of that stream. The batch path: no per-row records."""
        table = check_table(kind, table)
        with self._lock:
            if self._closed:
                raise AllocatorError(f"decision log writer for {self.directory} is closed")
            now = self._clock()
            self._flush_kind(kind, now)
            step = self.rotate_rows
            self._write_tables(
                kind, [table.slice(i, step) for i in range(0, table.num_rows, step)], now
            )

    def _append(self, kind: Kind, *records: Any) -> None:
        if not records:
            return
        with self._lock:
            if self._closed:
                raise AllocatorError(f"decision log writer for {self.directory} is closed")
            now = self._clock()
            buffer = self._buffers[kind]
            if not buffer:
                self._first_at[kind] = now
            buffer.extend(records)
            for k in KINDS:
                if len(self._buffers[k]) >= self.rotate_rows or self._expired(k, now):
                    self._flush_kind(k, now)

    def _expired(self, kind: Kind, now: float) -> bool:
        return (
            self.rotate_seconds is not None
            and bool(self._buffers[kind])
            and now - self._first_at[kind] >= self.rotate_seconds
        )

    def _flush_kind(self, kind: Kind, now: float) -> None:
        buffer = self._buffers[kind]
        if not buffer:
            return
        if self.rotate_rows >= len(buffer):
            chunks = [buffer]
        else:  # a batch write overshot: keep parts at most rotate_rows long
            step = self.rotate_rows
            chunks = [buffer[i : i + step] for i in range(0, len(buffer), step)]
        build = decisions_table if kind == "decisions" else outcomes_table
        written = 0
        try:
            for chunk in chunks:
                self._write_tables(kind, [build(chunk)], now)
                written += len(chunk)
        finally:
            if written:
                del buffer[:written]
                if buffer:
                    self._first_at[kind] = now
                else:
                    del self._first_at[kind]

    def _write_tables(self, kind: Kind, tables: Sequence[pa.Table], now: float) -> None:
        """One part per table, named in write order (the caller holds the lock)."""
        stamp = max(self._last_stamp, now)
        metadata = file_metadata(kind)
        for table in tables:
            while (self.directory / part_name(kind, stamp, self._seq)).exists():
                self._seq += 1
            name = part_name(kind, stamp, self._seq)
            _write_part(self.directory, name, table.replace_schema_metadata(metadata))
            self._seq += 1
            self._last_stamp = stamp

    def flush(self) -> None:
        """Write every buffered row (one part per non-empty stream)."""
        with self._lock:
            now = self._clock()
            for kind in KINDS:
                self._flush_kind(kind, now)

    def close(self) -> None:
        """Flush and refuse further records; closing twice is a no-op."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            for kind in KINDS:
                self._flush_kind(kind, now)
            self._closed = True

    def __enter__(self) -> DecisionLogWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"DecisionLogWriter({str(self.directory)!r}, {state})"
