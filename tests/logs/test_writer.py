from __future__ import annotations

import math
import re
import shutil
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from allocator.errors import AllocatorError, DecisionLogError, InvalidInputError
from allocator.logs import DecisionLogWriter, load_decision_log
from tests.logs.helpers import decision, outcome

NAME = re.compile(r"^(decisions|outcomes)-\d{8}T\d{6}-r0-\d{6}\.parquet$")


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def parts(directory, kind: str = "") -> list[str]:
    return sorted(p.name for p in directory.glob(f"{kind}*.parquet"))


def test_parts_are_named_by_utc_time_and_sequence(tmp_path):
    clock = FakeClock(1_700_000_000.0)  # 2023-11-14T22:13:20Z
    with DecisionLogWriter(tmp_path, clock=clock) as w:
        w.write_decision(decision(0))
        w.write_outcome(outcome(0))
    names = parts(tmp_path)
    assert names == [
        "decisions-20231114T221320-r0-000000.parquet",
        "outcomes-20231114T221320-r0-000001.parquet",
    ]
    meta = pq.read_metadata(tmp_path / names[0]).metadata
    assert meta[b"entry_alloc.schema_version"] == b"2"
    assert meta[b"entry_alloc.kind"] == b"decisions"
    assert meta[b"entry_alloc.writer"] == b"r0" and meta[b"entry_alloc.seq"] == b"0"
    assert re.fullmatch(rb"[0-9a-f]{64}", meta[b"entry_alloc.sha256"])
    meta = pq.read_metadata(tmp_path / names[1]).metadata
    assert meta[b"entry_alloc.kind"] == b"outcomes" and meta[b"entry_alloc.seq"] == b"1"


def test_rotation_by_rows(tmp_path):
    with DecisionLogWriter(tmp_path, rotate_rows=4, clock=FakeClock()) as w:
        for i in range(10):
            w.write_decision(decision(i))
    sizes = [pq.read_metadata(tmp_path / n).num_rows for n in parts(tmp_path, "decisions")]
    assert sum(sizes) == 10 and max(sizes) <= 4  # however the flusher met the rows
    assert list(load_decision_log(tmp_path).decision_id) == [
        decision(i).decision_id for i in range(10)
    ]


def test_an_idle_writer_flushes_by_itself(tmp_path):
    """No call after the write: the flusher thread writes the part within its interval."""
    w = DecisionLogWriter(tmp_path, flush_interval_s=0.05)
    w.write_decision(decision(0))
    w.write_outcome(outcome(0))
    deadline = time.monotonic() + 30.0  # liveness, not speed: generous on a loaded machine
    while (len(parts(tmp_path)) < 2 or w.buffered_rows) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(parts(tmp_path)) == 2 and w.buffered_rows == 0
    log = load_decision_log(tmp_path)  # read while the writer is still open
    assert len(log) == 1 and log.has_outcome.all()
    w.close()


def test_names_keep_write_order_when_the_clock_goes_back(tmp_path):
    clock = FakeClock()
    with DecisionLogWriter(tmp_path, clock=clock) as w:
        for i in range(3):
            w.write_decision(decision(i))
            w.flush()
            clock.t -= 3600.0
    names = parts(tmp_path)
    assert len(names) == 3 and all(NAME.match(n) for n in names)
    assert list(load_decision_log(tmp_path).decision_id) == [
        decision(i).decision_id for i in range(3)
    ]


def test_a_new_writer_continues_the_sequence(tmp_path):
    clock = FakeClock()
    for i in range(3):  # same second, three writer lifetimes
        with DecisionLogWriter(tmp_path, clock=clock) as w:
            w.write_decision(decision(i))
    assert [n[-14:-8] for n in parts(tmp_path)] == ["000000", "000001", "000002"]
    assert list(load_decision_log(tmp_path).decision_id) == [
        decision(i).decision_id for i in range(3)
    ]


def test_concurrent_writers_lose_and_repeat_nothing(tmp_path):
    n_threads, per_thread = 8, 2_000
    w = DecisionLogWriter(tmp_path, rotate_rows=1_500)
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        barrier.wait()
        for j in range(per_thread):
            i = t * per_thread + j
            w.write_decision(decision(i))
            if j % 2 == 0:
                w.write_outcome(outcome(i, reward=float(i)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    w.close()
    log = load_decision_log(tmp_path)
    expected = {decision(i).decision_id for i in range(n_threads * per_thread)}
    assert len(log) == len(expected) and set(log.decision_id) == expected
    assert log.duplicate_decisions == log.duplicate_outcomes == log.orphan_outcomes == 0
    with_outcome = log.has_outcome
    assert int(with_outcome.sum()) == n_threads * per_thread // 2
    index = np.array([int(d.split("-")[1], 16) for d in log.decision_id])
    np.testing.assert_array_equal(log.reward[with_outcome], index[with_outcome])
    assert all(index[with_outcome] % 2 == 0)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_close_is_idempotent_and_refuses_more_records(tmp_path):
    w = DecisionLogWriter(tmp_path)
    w.write_decision(decision(0))
    w.close()
    w.close()
    assert w.closed and len(parts(tmp_path)) == 1
    with pytest.raises(AllocatorError, match="is closed"):
        w.write_decision(decision(1))
    with pytest.raises(AllocatorError, match="is closed"):
        w.write_outcome(outcome(1))
    w.flush()  # nothing buffered: a no-op
    assert len(parts(tmp_path)) == 1


def test_context_manager_flushes_on_error(tmp_path):
    with pytest.raises(RuntimeError), DecisionLogWriter(tmp_path) as w:
        w.write_decision(decision(0))
        raise RuntimeError("boom")
    assert len(load_decision_log(tmp_path)) == 1


def test_flush_writes_both_streams_and_nothing_when_empty(tmp_path):
    w = DecisionLogWriter(tmp_path)
    w.flush()
    assert parts(tmp_path) == []
    w.write_decision(decision(0))
    w.write_outcome(outcome(0))
    w.flush()
    assert len(parts(tmp_path, "decisions")) == len(parts(tmp_path, "outcomes")) == 1
    w.close()
    assert len(parts(tmp_path)) == 2


def test_batch_writes_are_all_or_nothing_and_parts_stay_bounded(tmp_path):
    with DecisionLogWriter(tmp_path, rotate_rows=3) as w:
        with pytest.raises(InvalidInputError, match=r"records\[1\]: propensity"):
            w.write_decisions([decision(0), decision(1, propensity=0.0)])
        w.write_decisions([decision(i) for i in range(7)])
        w.write_outcomes([outcome(i) for i in range(2)])
    sizes = [pq.read_metadata(tmp_path / n).num_rows for n in parts(tmp_path, "decisions")]
    assert sizes == [3, 3, 1]
    assert len(load_decision_log(tmp_path)) == 7


def test_a_failed_part_keeps_its_rows_buffered(tmp_path):
    """A real failure: the log directory vanishes under the writer, then comes back."""
    directory = tmp_path / "log"
    w = DecisionLogWriter(directory)
    w.write_decision(decision(0))
    w.flush()
    shutil.rmtree(directory)
    w.write_decision(decision(1))
    w.write_outcome(outcome(1))
    with pytest.raises(DecisionLogError, match="No such file or directory"):
        w.flush()
    assert not w.healthy and w.errors == 1 and w.buffered_rows == 2
    assert "failed" in (w.last_error or "")
    directory.mkdir()
    w.write_decision(decision(2))
    w.flush()  # the kept rows go out first, in order
    assert w.healthy and w.buffered_rows == 0
    w.close()
    log = load_decision_log(directory)  # part 0 is gone with the old directory
    assert list(log.decision_id) == [decision(1).decision_id, decision(2).decision_id]
    assert log.has_outcome.tolist() == [True, False]


def test_closing_on_a_failing_disk_says_what_was_lost(tmp_path):
    directory = tmp_path / "log"
    w = DecisionLogWriter(directory)
    w.write_decisions([decision(i) for i in range(3)])
    shutil.rmtree(directory)
    with pytest.raises(DecisionLogError, match="closing lost 3 buffered rows"):
        w.close()
    assert w.closed
    with pytest.raises(DecisionLogError, match="is closed"):
        w.write_decision(decision(4))


def test_rows_the_conversion_refuses_make_the_writer_unhealthy_not_its_thread_die(tmp_path):
    """Rows of the unchecked paths (``validated=True``: the serving layer's, whose checks
    should have refused them) that the part's conversion fails on: a recorded
    DecisionLogError from flush, from the flusher thread (which lives on) and from close,
    the rows kept buffered (they once left a raw UnicodeEncodeError, or a dead thread that
    dropped them with the writer still healthy)."""
    w = DecisionLogWriter(tmp_path, flush_interval_s=0.02)
    w.write_decision(decision(0, request_id="q\ud800"), validated=True)
    w.write_outcome(outcome(0))
    with pytest.raises(DecisionLogError, match=r"cannot be written: .*surrogates not allowed"):
        w.flush()
    assert not w.healthy and w.errors == 1 and w.buffered_rows == 2
    deadline = time.monotonic() + 30.0  # the flusher meets the same rows, and lives on
    while w.errors < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.errors >= 3 and not w.healthy  # two failed ticks: the thread outlived one
    assert "surrogates not allowed" in (w.last_error or "") and w.buffered_rows == 2
    with pytest.raises(DecisionLogError, match="closing lost 2 buffered rows"):
        w.close()
    assert parts(tmp_path) == []


BAD_DECISIONS = [
    ({"propensity": 0.0}, r"propensity = 0\.0: expected a probability in \(0, 1\]"),
    ({"propensity": 1.5}, r"propensity = 1\.5"),
    ({"propensity": math.nan}, r"propensity = nan: expected a finite number"),
    ({"propensity": 0.25}, r"propensity = 0\.25: expected the chosen arm's candidate prob"),
    ({"timestamp": math.inf}, r"timestamp = inf: expected a finite number"),
    ({"timestamp": "2024-01-01"}, r"timestamp = '2024-01-01'"),
    ({"timestamp": 10**400}, r"timestamp = <int of 1,329 bits>: expected a finite number"),
    ({"timestamp": 10**5000}, r"timestamp = <int of 16,610 bits>"),  # past repr's limit
    ({"candidate_probabilities": ("0.5", "0.25", "0.25")}, r"expected a flat sequence of floats"),
    ({"candidate_probabilities": (0.5, None, 0.25)}, r"expected a flat sequence of floats"),
    (
        {"candidate_probabilities": (0.5, 0.5)},
        r"candidate_probabilities = \[0\.5, 0\.5\]: .*one probability per candidate \(3\), got 2",
    ),
    ({"candidate_probabilities": (0.5, 0.25, 0.3)}, r"summing to 1"),
    ({"candidate_probabilities": (0.5, -0.25, 0.75)}, r"in \[0, 1\]"),
    ({"candidate_probabilities": (0.5, math.nan, 0.5)}, r"candidate_probabilities\[1\] = nan"),
    ({"arm_id": "pdd"}, r"arm_id = 'pdd': expected one of the candidates"),
    ({"candidates": ()}, r"candidates = \[\]: expected at least one"),
    ({"candidates": ("taobao", "jd", "jd")}, r"expected distinct arm ids"),
    ({"candidates": "taobao"}, r"candidates = 'taobao': expected a sequence of strings"),
    ({"candidates": ("taobao", 7, "jd")}, r"candidates\[1\] = 7: expected a string"),
    ({"decision_id": ""}, r"decision_id = '': expected a non-empty string"),
    ({"request_id": 12}, r"request_id = 12"),
    # a lone surrogate has no UTF-8 form: the part could not be written
    ({"request_id": "q\ud800"}, r"request_id = 'q\\ud800': expected a string of UTF-8 text"),
    ({"candidates": ("taobao", "jd\udfff")}, r"candidates\[1\] = 'jd\\udfff': expected a str"),
    ({"attrs": {"slot\udc00": "top"}}, r"attrs key = 'slot\\udc00': expected a string of UTF-8"),
    ({"arm_index": -1}, r"arm_index = -1: expected an integer in \[0, 2\*\*63\)"),
    ({"arm_index": 2**63}, r"arm_index = 9223372036854775808"),
    ({"arm_index": True}, r"arm_index = True"),
    ({"model_version": 1.0}, r"model_version = 1\.0"),
    ({"forced": 1}, r"forced = 1: expected a bool"),
    ({"group": None}, r"group = None"),
    ({"context": (1.0, math.inf)}, r"context\[1\] = inf"),
    ({"context": ((1.0,), (2.0,))}, r"context = .*flat sequence"),
    ({"context": ((1.0,), (2.0, 3.0))}, r"context = .*flat sequence"),
    ({"context": (True, False)}, r"context = .*flat sequence"),
    ({"attrs": {"slot": 3}}, r"attrs\['slot'\] = 3: expected a string"),
    ({"attrs": ["slot"]}, r"attrs = \['slot'\]: expected a mapping"),
    ({"adjusted_by": (None,)}, r"adjusted_by\[0\] = None"),
]

BAD_OUTCOMES = [
    ({"timestamp": math.nan}, r"timestamp = nan: expected a finite number"),
    ({"click": -1.0}, r"click = -1\.0: expected a finite number >= 0"),
    ({"gmv": math.inf}, r"gmv = inf"),
    ({"reward": math.nan}, r"reward = nan"),
    ({"source": "manual"}, r"source = 'manual': expected one of \('feedback', 'expired_default'\)"),
    ({"decision_id": None}, r"decision_id = None"),
    ({"decision_id": "r0-\ud800"}, r"decision_id = 'r0-\\ud800': expected a non-empty string of"),
]


@pytest.mark.parametrize(("changes", "match"), BAD_DECISIONS)
def test_invalid_decisions_are_rejected_and_the_writer_keeps_working(tmp_path, changes, match):
    with DecisionLogWriter(tmp_path, rotate_rows=2) as w:
        w.write_decision(decision(0))
        with pytest.raises(InvalidInputError, match=match):
            w.write_decision(decision(1, **changes))
        w.write_decision(decision(2))
    log = load_decision_log(tmp_path)
    assert list(log.decision_id) == [decision(0).decision_id, decision(2).decision_id]


@pytest.mark.parametrize(("changes", "match"), BAD_OUTCOMES)
def test_invalid_outcomes_are_rejected_and_the_writer_keeps_working(tmp_path, changes, match):
    with DecisionLogWriter(tmp_path) as w:
        w.write_decision(decision(0))
        with pytest.raises(InvalidInputError, match=match):
            w.write_outcome(outcome(0, **changes))
        w.write_outcome(outcome(0))
    log = load_decision_log(tmp_path)
    assert log.reward.tolist() == [0.25] and log.duplicate_outcomes == 0


def test_records_of_the_wrong_type_are_rejected(tmp_path):
    with DecisionLogWriter(tmp_path) as w:
        with pytest.raises(InvalidInputError, match="record = 'OutcomeRecord': expected a Dec"):
            w.write_decision(outcome(0))  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="expected an OutcomeRecord"):
            w.write_outcome(decision(0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotate_rows": 0}, "rotate_rows = 0: expected an integer >= 1"),
        ({"rotate_rows": 2.5}, "rotate_rows = 2.5"),
        ({"flush_interval_s": 0.0}, "flush_interval_s = 0.0: expected a finite number > 0"),
        ({"flush_interval_s": math.nan}, "flush_interval_s = nan"),
        ({"max_buffered_rows": 0}, "max_buffered_rows = 0: expected an integer >= 1"),
        ({"replica": "../x"}, r"replica = '\.\./x': expected 1-64 characters"),
        ({"replica": ""}, "replica = ''"),
    ],
)
def test_invalid_writer_settings(tmp_path, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        DecisionLogWriter(tmp_path, **kwargs)
