"""Buffered, checksummed, crash-bounded writer of the decision log.

Records are validated on arrival and buffered in memory per stream. A small daemon thread
owned by the writer writes whatever is buffered every ``flush_interval_s`` seconds (and at
once when a buffer reaches ``rotate_rows``), so a ``kill -9`` loses at most the rows of the
last interval plus one part's write time, and callers never wait for the disk. Each write is
a whole new part (see :mod:`allocator.logs.parts`), because a Parquet file is unreadable
until its footer is written: appending row groups to an open file would lose the whole file
on a kill. The trade-off is many small parts under light traffic (up to two per interval:
~170,000 a day at 1 s); raise the interval, or compact offline, if that matters more than
the loss bound. Catalogue rows (schema 3) are written first in every flush, so a decision
part never reaches the disk before the catalogue rows it refers to; and since decision rows
buffered across a lost directory still refer to them, the writer keeps its catalogue parts'
bytes (~6 B an arm) and writes again, as a new part, any that a replaced directory lost
(the loader takes identical catalogue rows twice as once).

One writer per directory and replica: an exclusive ``flock`` on ``.<replica>.lock``
(released by the OS when the process dies, even by ``kill -9``) makes a second writer fail
at open with :class:`~allocator.errors.LogLocked`. The replica's parts carry consecutive
sequence numbers across writer lifetimes, so a part missing from the middle is detected by
the loader.

A failed part write (disk full, permission, a vanished directory) keeps its rows buffered
for the next attempt and marks the writer unhealthy (``healthy``, ``errors``,
``last_error``); the serving layer applies its policy to that (``serving.on_log_error``).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from allocator.errors import DecisionLogError, InvalidInputError, LogLocked
from allocator.logs.indexed import IndexedDecision, indexed_table
from allocator.logs.parts import (
    PartName,
    check_replica,
    encode_part,
    fsync_dir,
    parse_name,
    part_name,
    write_part,
)
from allocator.logs.schema import (
    KINDS,
    DecisionRecord,
    Kind,
    OutcomeRecord,
    check_decision,
    check_outcome,
    decisions_table,
    outcomes_table,
)
from allocator.logs.tables import check_table

#: the streams whose rows traffic makes: the bounds, ``buffered_rows`` and ``full`` count
#: these; catalogue rows (bounded by the registry, written once) are never counted or dropped
_TRAFFIC: Final = ("decisions", "outcomes")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} = {value!r}: expected an integer >= 1")


def _as_tables(kind: Kind, items: Sequence[Any]) -> list[pa.Table]:
    """The buffered items in arrival order as tables of one schema each: runs of records
    (v2 decision records, v3 :class:`IndexedDecision` rows, outcome records) become
    tables, and consecutive tables of the same schema are joined (a decisions buffer may
    hold records and tables of both versions; a part holds one)."""
    tables: list[pa.Table] = []
    for form, run in itertools.groupby(items, type):
        group = list(run)
        if form is pa.Table:
            tables.extend(group)
        elif form is IndexedDecision:
            tables.append(indexed_table(group))
        else:
            tables.append((decisions_table if kind == "decisions" else outcomes_table)(group))
    return [pa.concat_tables(list(same)) for _, same in itertools.groupby(tables, _schema)]


def _row_count(item: Any) -> int:
    """Rows of a buffered item: a table, or one record."""
    return item.num_rows if isinstance(item, pa.Table) else 1


def _schema(table: pa.Table) -> pa.Schema:
    return table.schema


def _identity(directory: Path) -> tuple[int, int] | None:
    """Which directory ``directory`` names now (device, inode), or None if none."""
    try:
        info = directory.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _lock_replica(directory: Path, replica: str) -> int:
    """An open descriptor holding the exclusive lock of ``replica`` in ``directory``."""
    fd = os.open(directory / f".{replica}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LogLocked(
            f"decision log {directory} is already written by replica {replica!r} "
            f"(process {holder}): one writer per directory and replica"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _stop(fd: int, stop: threading.Event, wake: threading.Event) -> None:
    stop.set()
    wake.set()
    os.close(fd)  # releases the flock


def _flush_loop(
    ref: weakref.ReferenceType[DecisionLogWriter], stop: threading.Event,
    wake: threading.Event, interval: float,
) -> None:  # fmt: skip
    """The flusher thread: writes on a fixed cadence (a long write does not push the next
    tick back), or at once when woken by a full part. Holds the writer weakly, so an
    unclosed writer can be collected."""
    tick = time.monotonic() + interval
    while not stop.is_set():
        wake.wait(max(0.0, tick - time.monotonic()))
        wake.clear()
        writer = ref()
        if writer is None or stop.is_set():
            return
        writer._background_flush()
        del writer
        now = time.monotonic()
        if now >= tick:
            tick = max(tick + interval, now)


class DecisionLogWriter:
    """Append decisions and outcomes of ``replica`` to the log in ``directory`` (created).

    Thread-safe. Buffers are guarded by a short lock; part writes are serialised by a
    second one, held while the disk works, so record writers never wait for a write. A
    rejected record raises :class:`InvalidInputError` and leaves the writer unchanged.
    ``max_buffered_rows`` (default ``2 * rotate_rows``; a decision row takes ~1 KB) bounds
    the buffers while the disk is healthy: a record that fills them writes them at once, in
    the caller's thread. While parts fail, the buffers grow past it (``full``); the writer
    itself never drops a row, the serving layer decides (``serving.on_log_error``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        rotate_rows: int = 100_000,
        flush_interval_s: float = 1.0,
        *,
        replica: str = "r0",
        max_buffered_rows: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_count("rotate_rows", rotate_rows)
        if max_buffered_rows is not None:
            _check_count("max_buffered_rows", max_buffered_rows)
        if not (
            isinstance(flush_interval_s, int | float)
            and not isinstance(flush_interval_s, bool)
            and math.isfinite(flush_interval_s)
            and flush_interval_s > 0
        ):
            raise InvalidInputError(
                f"flush_interval_s = {flush_interval_s!r}: expected a finite number > 0"
            )
        self.replica = check_replica(replica)
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = _lock_replica(self.directory, replica)
        except OSError as err:
            raise DecisionLogError(f"cannot open decision log {self.directory}: {err}") from None
        self.rotate_rows = rotate_rows
        self.max_buffered_rows = max_buffered_rows or 2 * rotate_rows
        self.flush_interval_s = float(flush_interval_s)
        self._clock = clock
        self._session = secrets.token_hex(8)
        self._lock = threading.Lock()  # buffers, health, closed
        self._io = threading.Lock()  # part writes and the sequence, in order
        # records, or whole tables of checked rows (the batch path), in arrival order
        self._buffers: dict[Kind, list[Any]] = {kind: [] for kind in KINDS}
        self._rows: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self._in_flight = 0
        self._last_stamp = -math.inf
        self._closed = False
        # (file, bytes) of every catalogue part written, and the directory they went to
        self._catalogue: list[tuple[str, bytes]] = []
        self._home = _identity(self.directory)
        self.errors = 0
        self.last_error: str | None = None
        self.healthy = True
        names = [parse_name(p.name) for p in self.directory.iterdir()]
        mine = [n.seq for n in names if n is not None and n.replica == replica]
        self._seq = 1 + max(mine, default=-1)
        for orphan in self.directory.glob(f".*-{replica}-*.parquet.*.tmp"):
            orphan.unlink(missing_ok=True)  # a part a killed writer of this replica left
        # pyarrow's first conversion imports pandas (~1 s): pay it here, not in the first
        # flush, where it would stretch the window a kill can lose
        encode_part(outcomes_table([]), PartName("outcomes", replica, 0), self._session)
        stop, wake = threading.Event(), threading.Event()
        self._wake = wake
        self._release = weakref.finalize(self, _stop, fd, stop, wake)
        self._thread = threading.Thread(
            target=_flush_loop, args=(weakref.ref(self), stop, wake, self.flush_interval_s),
            name=f"decision-log-{replica}", daemon=True,
        )  # fmt: skip
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered_rows(self) -> int:
        """Decision and outcome rows validated but not yet on disk (buffered, or in a part
        being written)."""
        return self._in_flight + sum(self._rows[k] for k in _TRAFFIC)

    @property
    def full(self) -> bool:
        """The buffers hold ``max_buffered_rows`` rows or more (parts are failing)."""
        return self.buffered_rows >= self.max_buffered_rows

    def write_decision(self, record: DecisionRecord, *, validated: bool = False) -> None:
        """Validate and buffer one decision. ``validated=True`` skips the row checks, for
        records the allocator builds from inputs it has checked (the serving hot path); the
        part's column checks at load still apply."""
        if not validated:
            check_decision(record)
        self._append("decisions", record)

    def write_indexed_decision(self, row: IndexedDecision) -> None:
        """Buffer one schema-3 decision row, built from checked inputs (the serving single
        path: no per-row checks; the part's column checks at load still apply). Its
        ``catalogue`` epoch must be written to this writer already."""
        self._append("decisions", row)

    def write_outcome(self, record: OutcomeRecord, *, validated: bool = False) -> None:
        """Validate and buffer one outcome (``validated`` as in :meth:`write_decision`)."""
        if not validated:
            check_outcome(record)
        self._append("outcomes", record)

    def write_rows(self, kind: Kind, table: pa.Table) -> None:
        """Buffer a table of ``kind`` rows in the stream's exact schema, built from checked
        inputs (the serving batch path: one table per call, no per-row records; the
        part's column checks at load still apply). Use :meth:`write_table` for tables
        from elsewhere."""
        self._append_items(kind, [table], table.num_rows)

    def write_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Validate every record, then buffer them all (none if any is invalid)."""
        self._check_all(records, check_decision)
        self._append("decisions", *records)

    def write_outcomes(self, records: Sequence[OutcomeRecord]) -> None:
        """Validate every record, then buffer them all (none if any is invalid)."""
        self._check_all(records, check_outcome)
        self._append("outcomes", *records)

    @staticmethod
    def _check_all(records: Sequence[Any], check: Callable[[Any], None]) -> None:
        for i, record in enumerate(records):
            try:
                check(record)
            except InvalidInputError as err:
                raise InvalidInputError(f"records[{i}]: {err}") from None

    def write_table(self, kind: Kind, table: pa.Table) -> None:
        """Validate a whole Arrow table of ``kind`` column-wise (:func:`check_table`) and
        write it now, as parts of at most ``rotate_rows`` rows, after every buffered row.
        The batch path: no per-row records. A failed write raises
        :class:`~allocator.errors.DecisionLogError`."""
        table = check_table(kind, table)
        with self._io:
            self._check_open()
            self._drain()
            step = self.rotate_rows
            for i in range(0, table.num_rows, step):
                self._recorded(lambda: self._write(kind, table.slice(i, step)))  # noqa: B023

    def _check_open(self) -> None:
        if self._closed:
            raise DecisionLogError(f"decision log writer for {self.directory} is closed")

    def _append(self, kind: Kind, *records: Any) -> None:
        self._append_items(kind, records, len(records))

    def _append_items(self, kind: Kind, items: Sequence[Any], rows: int) -> None:
        if not rows:
            return
        with self._lock:
            self._check_open()
            self._buffers[kind].extend(items)
            self._rows[kind] += rows
            if self._rows[kind] >= self.rotate_rows:
                self._wake.set()
            overflow = self.healthy and self.buffered_rows >= self.max_buffered_rows
        if overflow:  # the flusher lags behind a healthy disk: the caller writes (backpressure)
            self._background_flush()

    def _write(self, kind: Kind, table: pa.Table) -> None:
        """One part, next in this replica's sequence (the caller holds ``_io``)."""
        stamp = max(self._last_stamp, self._clock())
        name = PartName(kind, self.replica, self._seq)
        try:
            data = encode_part(table, name, self._session)
            file = part_name(kind, stamp, self.replica, self._seq)
            write_part(self.directory, file, data)
            self._seq += 1
            self._last_stamp = stamp
            fsync_dir(self.directory)
        except (OSError, pa.ArrowException) as err:
            raise DecisionLogError(
                f"writing {kind} part {self._seq} to {self.directory} failed: {err}"
            ) from None
        if kind == "catalogue":
            self._catalogue.append((file, data))

    def _restore_catalogue(self) -> None:
        """Write again the catalogue parts a replaced directory lost (the caller holds
        ``_io``). Checked when the directory is not the one last written to (deleted and
        made again) or after a failed write: cheap on the healthy path."""
        home = _identity(self.directory)
        if home is None or (home == self._home and self.healthy):
            return
        there = [(self.directory / f).is_file() for f, _ in self._catalogue]
        lost = [d for (_, d), on_disk in zip(self._catalogue, there, strict=True) if not on_disk]
        if lost:
            rows = pa.concat_tables([pq.read_table(pa.BufferReader(d)) for d in lost])
            self._catalogue = [
                c for c, on_disk in zip(self._catalogue, there, strict=True) if on_disk
            ]
            self._recorded(lambda: self._write("catalogue", rows.replace_schema_metadata(None)))
        self._home = home

    def _failed(self, err: DecisionLogError) -> DecisionLogError:
        """Record a failure in the writer's health; returns ``err`` to raise."""
        with self._lock:
            self.errors += 1
            self.last_error = str(err)
            self.healthy = False
        return err

    def _recorded(self, action: Callable[[], None]) -> None:
        """Run a part write and record the writer's health from it."""
        try:
            action()
        except DecisionLogError as err:
            raise self._failed(err) from None
        with self._lock:
            self.healthy = True

    def _drain(self) -> None:
        """Write every buffered row, oldest first, at most ``rotate_rows`` per part (the
        caller holds ``_io``). On failure the unwritten rows go back to the buffers' front.

        Any failure is a recorded :class:`DecisionLogError`, also one of the buffered rows'
        conversion (rows the checks upstream should have refused): the flusher thread
        survives it and the writer reports itself unhealthy, rather than dying silently."""
        with self._lock:
            taken = {k: self._buffers[k] for k in KINDS}
            self._buffers = {k: [] for k in KINDS}
            self._in_flight = sum(self._rows[k] for k in _TRAFFIC)
            self._rows = dict.fromkeys(KINDS, 0)
        left = taken
        try:
            left = {k: _as_tables(k, taken[k]) for k in KINDS}
            self._restore_catalogue()
            for kind in KINDS:
                while left[kind]:
                    table = left[kind][0]
                    chunk = table.slice(0, self.rotate_rows)
                    self._recorded(lambda: self._write(kind, chunk))  # noqa: B023
                    left[kind][0] = table.slice(chunk.num_rows)
                    if not left[kind][0].num_rows:
                        left[kind].pop(0)
                    with self._lock:
                        self._in_flight -= chunk.num_rows if kind in _TRAFFIC else 0
        except DecisionLogError:
            raise  # recorded by _recorded
        except Exception as err:
            raise self._failed(
                DecisionLogError(f"buffered rows of {self.directory} cannot be written: {err}")
            ) from None
        finally:
            with self._lock:
                self._in_flight = 0
                for kind in KINDS:
                    self._buffers[kind][:0] = left[kind]
                    self._rows[kind] += sum(map(_row_count, left[kind]))

    def _background_flush(self) -> None:
        with self._io, contextlib.suppress(DecisionLogError):
            self._drain()  # recorded in the writer's health; retried next interval

    def flush(self) -> None:
        """Write every buffered row now; :class:`~allocator.errors.DecisionLogError` (rows
        kept buffered) if the disk refuses."""
        with self._io:
            self._drain()

    def close(self) -> None:
        """Stop the flusher, write what is buffered, release the lock; closing twice is a
        no-op. If the last write fails the rows are lost, and the error says how many."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        detached = self._release.detach()
        assert detached is not None  # only close() detaches, once
        fd, stop, wake = detached[2]
        stop.set()
        wake.set()
        self._thread.join()
        try:
            with self._io:
                self._drain()
        except DecisionLogError as err:
            lost = self.buffered_rows
            raise DecisionLogError(f"closing lost {lost} buffered rows: {err}") from None
        finally:
            _stop(fd, stop, wake)

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
        return f"DecisionLogWriter({str(self.directory)!r}, replica={self.replica!r}, {state})"
