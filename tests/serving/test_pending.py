"""The array-backed pending table: id forms, compaction, memory, snapshot arrays."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.errors import SnapshotError
from allocator.serving.pending import PendingTable, split_id

HEAD = "r0-0badcafe"


def table(n: int, capacity: int = 10**6, d: int | None = None) -> PendingTable:
    t = PendingTable(capacity, d)
    ctx = None if d is None else np.arange(n * d, dtype=np.float64).reshape(n, d)
    t.add_many(HEAD, 0, np.arange(n) % 7, 1000.0 + np.arange(n), ctx)
    return t


@pytest.mark.parametrize(
    "bad", ["r0-0badcafe-0A", "r0-0badcafe-05", "r0-0badcafe-", "nodash", "r0-0badcafe-x1",
            "r1-0badcafe-5", "r0-0badcafe-" + "f" * 16, "-5"],
)  # fmt: skip
def test_ids_not_issued_here_are_neither_pending_nor_finished(bad):
    t = table(20)
    t.finish(f"{HEAD}-5")
    t.settle(bad)
    assert t.get(bad) is None and not t.was_finished(bad)
    assert len(t) == 20


def test_entries_come_back_exactly_and_only_once():
    t = table(50, d=3)
    e = t.get(f"{HEAD}-1f")
    assert e is not None and (e.arm, e.timestamp) == (31 % 7, 1031.0)
    np.testing.assert_array_equal(e.context, [93.0, 94.0, 95.0])
    t.settle(f"{HEAD}-1f")
    assert t.was_finished(f"{HEAD}-1f")
    assert t.get(f"{HEAD}-1f") is None and len(t) == 49
    assert split_id(f"{HEAD}-1f") == (HEAD, 31)


def test_memory_follows_the_pending_count_not_the_history():
    """A long run where old decisions never get feedback: dead rows are compacted, so
    the arrays stay within a small multiple of the live rows."""
    t = PendingTable(10**6, 16)
    counter = 0
    for _ in range(200):
        t.add_many(HEAD, counter, np.zeros(500, dtype=np.int64), np.zeros(500), np.ones((500, 16)))
        for k in range(counter + 1, counter + 500):
            t.settle(f"{HEAD}-{k:x}")
        counter += 500
    assert len(t) == 200  # the first decision of each batch
    assert t.get(f"{HEAD}-0") is not None
    per_row = 8 + 4 + 8 + 8 + 1 + 16 * 8
    assert t.nbytes <= 4 * (len(t) + 500) * per_row


def test_a_million_pending_beta_decisions_cost_under_60_bytes_each():
    t = table(10**6)
    assert len(t) == 10**6
    assert t.nbytes / 10**6 <= 2 * (8 + 4 + 8 + 8 + 1)


def test_over_capacity_and_expired_rows_are_the_oldest_live_ones():
    t = table(8, capacity=10)
    t.settle(f"{HEAD}-1")
    t.add_many(HEAD, 8, np.zeros(5, dtype=np.int64), 2000.0 + np.zeros(5), None)
    rows = t.over_capacity()
    assert t.entries(rows).ids == [f"{HEAD}-0", f"{HEAD}-2"]
    t.finish_rows(rows)
    assert len(t) == 10 and t.was_finished(f"{HEAD}-2") and t.get(f"{HEAD}-2") is None
    entries = t.entries(t.expired(1004.0))  # times 1000 + k for the first 8
    assert entries.ids == [f"{HEAD}-{k}" for k in (3, 4)]
    np.testing.assert_array_equal(entries.timestamps, [1003.0, 1004.0])
    assert t.expired(999.0).size == 0


def test_snapshot_arrays_round_trip_and_forged_orders_are_refused():
    t = table(30, d=2)
    t.settle(f"{HEAD}-3")
    t.finish(f"{HEAD}-3")
    arrays = t.to_arrays(2)
    back = PendingTable.from_arrays(100, arrays, 10, 2, 1e6)
    assert back.to_arrays(2).keys() == arrays.keys()
    for name, value in back.to_arrays(2).items():
        np.testing.assert_array_equal(value, arrays[name])
    assert back.was_finished(f"{HEAD}-3") and back.get(f"{HEAD}-4") is not None
    forged = dict(arrays, **{"pending.ids": arrays["pending.ids"][::-1].copy()})
    with pytest.raises(SnapshotError, match="in issue order"):
        PendingTable.from_arrays(100, forged, 10, 2, 1e6)
    forged = dict(arrays, **{"pending.ids": np.array(["x"] * 29)})
    with pytest.raises(SnapshotError, match="repeat an id"):
        PendingTable.from_arrays(100, forged, 10, 2, 1e6)


def test_one_row_paths_agree_with_the_bulk_ones():
    """``add_one`` writes what ``add_many`` of one does; ``due_one`` names the oldest row
    only when ``expired`` would return it alone (-2: ask ``expired``); ``find`` sees only
    live rows."""
    one, many = PendingTable(100, 2), PendingTable(100, 2)
    for k in range(70):  # past the first allocation: a growth on the way
        x = np.array([[k, -k]], dtype=np.float64)
        one.add_one(HEAD, k, k % 5, 1000.0 + k // 2, x)
        many.add_many(HEAD, k, np.array([k % 5]), np.array([1000.0 + k // 2]), x)
    assert one.to_arrays(2).keys() == many.to_arrays(2).keys()
    for name, value in one.to_arrays(2).items():
        np.testing.assert_array_equal(value, many.to_arrays(2)[name], err_msg=name)
    t = table(6)  # times 1000..1005, one per row
    for deadline, due, rows in ((999.0, -1, []), (1000.0, 0, [0]), (1001.0, -2, [0, 1])):
        assert t.due_one(deadline) == due
        assert t.expired(deadline).tolist() == rows
    t.settle(f"{HEAD}-1")  # the next row is dead: due_one cannot tell, expired() can
    assert t.due_one(1001.0) == -2 and t.expired(1001.0).tolist() == [0]
    assert t.find(f"{HEAD}-1") == -1 and t.find(f"{HEAD}-4") == 4
    t.settle(None, 0)
    assert t.due_one(1001.0) == -1 and t.due_one(1002.0) == 2
    assert t.find(f"{HEAD}-0") == -1 and t.was_finished(f"{HEAD}-0")
