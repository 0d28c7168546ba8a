"""Damaged, missing, copied and foreign parts; one writer per directory and replica."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allocator.errors import LogCorrupt, LogLocked
from allocator.logs import DecisionLog, DecisionLogWriter, load_decision_log
from tests.logs.helpers import decision, outcome


def write_log(directory: Path, replica: str = "r0", start: int = 0) -> None:
    """Three decision parts (with contexts) and one outcome part."""
    with DecisionLogWriter(directory, rotate_rows=40, replica=replica) as w:
        rows = [
            decision(start + i, decision_id=f"{replica}-{i:x}", context=(0.1 * i, -1.0))
            for i in range(120)
        ]
        w.write_decisions(rows)
        w.flush()
        w.write_outcomes([outcome(i, decision_id=f"{replica}-{i:x}") for i in range(0, 120, 3)])


def same(a: DecisionLog, b: DecisionLog) -> bool:
    return (
        list(a.decision_id) == list(b.decision_id)
        and np.array_equal(a.propensity, b.propensity)
        and np.array_equal(a.cand_prob, b.cand_prob)
        and np.array_equal(a.context, b.context)
        and np.array_equal(a.reward, b.reward, equal_nan=True)
    )


def flip_fuzz(tmp_path: Path, flips_per_part: int, seed: int) -> dict[str, int]:
    """Flip one bit at a time at sampled positions of every part; tally what pyarrow alone
    would have made of the file, and check what the loader does."""
    write_log(tmp_path)
    full = load_decision_log(tmp_path)
    rng = np.random.default_rng(seed)
    tally = {"flips": 0, "refused": 0, "decodes_different": 0, "pyarrow_error": 0}
    for part in sorted(tmp_path.glob("*.parquet")):
        good = part.read_bytes()
        without = tmp_path / "without"
        shutil.copytree(tmp_path, without, ignore=shutil.ignore_patterns(part.name, ".*"))
        try:
            rest = load_decision_log(without, on_damaged="skip")
        finally:
            shutil.rmtree(without)
        original = pq.read_table(io.BytesIO(good))
        positions = rng.choice(len(good), size=min(flips_per_part, len(good)), replace=False)
        for pos in positions:
            bad = bytearray(good)
            bad[pos] ^= 1 << int(rng.integers(8))
            part.write_bytes(bytes(bad))
            tally["flips"] += 1
            try:  # what reading the file unchecked would give
                if not pq.read_table(io.BytesIO(bytes(bad))).equals(original, check_metadata=True):
                    tally["decodes_different"] += 1
            except Exception:  # pyarrow raises ArrowException, OSError, UnicodeDecodeError...
                tally["pyarrow_error"] += 1
            with pytest.raises(LogCorrupt, match=part.name):
                load_decision_log(tmp_path)
            skipped = load_decision_log(tmp_path, on_damaged="skip")
            assert [d.part for d in skipped.damaged] == [part.name]
            assert same(skipped, rest)  # the other parts load exactly as without this one
            tally["refused"] += 1
        part.write_bytes(good)
    assert same(load_decision_log(tmp_path), full)
    return tally


def test_every_sampled_bit_flip_is_refused_or_skipped_and_reported(tmp_path):
    tally = flip_fuzz(tmp_path, flips_per_part=25, seed=12)
    assert tally["refused"] == tally["flips"] == 100
    # without the checksum, many flips would decode silently into different values
    assert tally["decodes_different"] > 0


@pytest.mark.slow
def test_bit_flip_fuzz_many_positions(tmp_path):
    tally = flip_fuzz(tmp_path, flips_per_part=750, seed=13)
    print(tally)
    assert tally["refused"] == tally["flips"] == 3000


def test_a_part_missing_from_the_middle_is_detected(tmp_path):
    write_log(tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert [n[-14:-8] for n in names] == ["000000", "000001", "000002", "000003"]
    (tmp_path / names[1]).unlink()
    with pytest.raises(LogCorrupt, match=rf"r0#1 is missing: writer 'r0' jumps from {names[0]}"):
        load_decision_log(tmp_path)
    log = load_decision_log(tmp_path, on_damaged="skip")
    assert [(d.part, d.reason.split(":")[0]) for d in log.damaged] == [("r0#1", "is missing")]
    assert len(log) == 80 and log.orphan_outcomes == 13  # outcomes of the lost 40 decisions
    (tmp_path / names[2]).unlink()
    with pytest.raises(LogCorrupt, match="r0#1-2 is missing"):
        load_decision_log(tmp_path)


def test_a_copied_part_is_detected(tmp_path):
    write_log(tmp_path)
    first = sorted(tmp_path.glob("decisions-*"))[0]
    shutil.copy(first, tmp_path / first.name.replace("decisions-2", "decisions-1"))
    with pytest.raises(LogCorrupt, match="repeats part number 0 of"):
        load_decision_log(tmp_path)
    log = load_decision_log(tmp_path, on_damaged="skip")
    assert len(log) == 120 and log.duplicate_decisions == 0 and len(log.damaged) == 1


def test_replicas_share_a_directory_each_with_its_sequence(tmp_path):
    write_log(tmp_path, "r0")
    write_log(tmp_path, "r1")
    write_log(tmp_path, "r0")  # a restart continues r0's sequence
    log = load_decision_log(tmp_path)
    assert log.last_parts == {"r0": 7, "r1": 3}
    assert len(log) == 240 and log.duplicate_decisions == 120  # r0 wrote its ids twice


def test_a_fifo_or_directory_named_like_a_part_is_refused_without_blocking(tmp_path):
    write_log(tmp_path)
    fifo = tmp_path / "decisions-20991231T000000-r9-000000.parquet"
    os.mkfifo(fifo)
    with pytest.raises(LogCorrupt, match="is not a regular file"):
        load_decision_log(tmp_path)
    assert len(load_decision_log(tmp_path, on_damaged="skip")) == 120


def test_a_second_writer_of_the_same_replica_is_refused(tmp_path):
    w = DecisionLogWriter(tmp_path, replica="r0")
    with pytest.raises(
        LogLocked, match=rf"already written by replica 'r0' \(process {os.getpid()}"
    ):
        DecisionLogWriter(tmp_path, replica="r0")
    other = DecisionLogWriter(tmp_path, replica="r1")  # another replica may share the directory
    other.close()
    w.close()
    DecisionLogWriter(tmp_path, replica="r0").close()  # closing released the lock


HOLDER = """
import sys, time
from allocator.logs import DecisionLogWriter
w = DecisionLogWriter(sys.argv[1], replica="r0")
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(LogLocked, match=f"process {child.pid}"):
            DecisionLogWriter(tmp_path, replica="r0")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    DecisionLogWriter(tmp_path, replica="r0").close()  # the OS released it with the process


def test_a_new_writer_removes_its_replicas_orphaned_temporary_parts(tmp_path):
    write_log(tmp_path)
    mine = tmp_path / ".decisions-20991231T000000-r0-000009.parquet.0a1b2c.tmp"
    theirs = tmp_path / ".decisions-20991231T000000-r1-000009.parquet.0a1b2c.tmp"
    mine.write_bytes(b"PAR1")
    theirs.write_bytes(b"PAR1")
    DecisionLogWriter(tmp_path, replica="r0").close()
    assert not mine.exists() and theirs.exists()


def _forged(directory: Path, kind: str, column: str, make) -> None:  # type: ignore[no-untyped-def]
    """Rewrite the last ``kind`` part with ``column`` replaced, under a fresh valid digest
    (the digest is integrity, not authorship: whoever writes the directory can forge it)."""
    import pyarrow as pa

    from allocator.logs.parts import encode_part, parse_name, read_part

    path = sorted(directory.glob(f"{kind}-*.parquet"))[-1]
    table = read_part(path).table
    i = table.schema.get_field_index(column)
    table = table.set_column(
        i, table.schema.field(i), make(table.column(column).combine_chunks(), pa)
    )
    session = pq.read_metadata(path).metadata[b"entry_alloc.session"].decode()
    path.write_bytes(encode_part(table, parse_name(path.name), session))


def _not_utf8(column, pa):  # type: ignore[no-untyped-def]
    cells = [b"\xff\xfe" + v.encode() for v in column.to_pylist()]
    return pa.array(cells, pa.binary()).view(pa.string())


def _attrs_key_not_utf8(column, pa):  # type: ignore[no-untyped-def]
    n = len(column)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32))
    keys = pa.array([b"\xff"] * n, pa.binary()).view(pa.string())
    return pa.MapArray.from_arrays(offsets, keys, pa.array(["x"] * n), type=column.type)


@pytest.mark.parametrize(
    ("kind", "column", "make"),
    [("decisions", "decision_id", _not_utf8), ("decisions", "policy_kind", _not_utf8),
     ("decisions", "attrs", _attrs_key_not_utf8)],
)  # fmt: skip
def test_text_that_is_not_utf8_is_a_corrupt_part(tmp_path, kind, column, make):
    """Parquet keeps whatever bytes a writer marked as text; Python fails on them only when
    it reads them, so the loader checks every text column (a map's keys too) first."""
    write_log(tmp_path)
    _forged(tmp_path, kind, column, make)
    with pytest.raises(LogCorrupt, match=f"{kind} column {column}.*invalid text"):
        load_decision_log(tmp_path)


def test_a_column_name_that_is_not_utf8_is_a_corrupt_part(tmp_path):
    """One byte of a column's name, at each place the part spells it, made non-UTF-8 under
    a recomputed digest: refused as corrupt (the footer's spelling) or harmless (a copy
    the reader does not use), never a raw decoding error."""
    from allocator.logs.parts import _digest, _digest_at

    write_log(tmp_path)
    path = sorted(tmp_path.glob("decisions-*.parquet"))[0]
    genuine = path.read_bytes()
    refused = start = 0
    while (at_name := genuine.find(b"policy_kind", start)) >= 0:
        start = at_name + 1
        data = bytearray(genuine)
        data[at_name + 2] = 0xFF
        at = _digest_at(data)
        data[at : at + 64] = _digest(data, at)
        path.write_bytes(bytes(data))
        try:
            load_decision_log(tmp_path)
        except LogCorrupt:
            refused += 1
    assert refused >= 1
