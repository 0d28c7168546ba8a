"""A failing decision log or autosave: serving degrades (drop / skip) or refuses cleanly
(raise), counted in metrics, on real filesystem failures (the directory vanishes)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import numpy as np
import pytest

from allocator.errors import AutosaveError, DecisionLogError, InvalidInputError
from allocator.logs import load_decision_log
from allocator.serving import Allocator
from tests.serving.helpers import T0, config

CANDS = ["taobao", "douyin", "merchant:1", "merchant:3"]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30.0  # liveness of the flusher thread, not its speed
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def state(alloc: Allocator) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = alloc.snapshot_state()
    meta["counters"].pop("rejected")
    return arrays, meta


def twin_state(alloc: Allocator) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`state` but for the epoch each allocator draws (and its decision ids carry)."""
    arrays, meta = state(alloc)
    arrays["pending.ids"] = np.char.replace(arrays["pending.ids"], meta.pop("epoch"), "")
    return arrays, meta


def assert_same(a: tuple[dict[str, np.ndarray], dict], b: tuple[dict[str, np.ndarray], dict]):
    assert a[1] == b[1]
    assert a[0].keys() == b[0].keys()
    for name, value in a[0].items():
        np.testing.assert_array_equal(b[0][name], value, err_msg=name)


class Outage:
    """The log directory goes away under the writer and comes back: ``deleted`` (with
    the parts on it, catalogue included; an empty directory returns) or ``moved`` away
    and back (the parts return with it)."""

    def __init__(self, how: str, log_dir, tmp_path) -> None:
        self.how, self.log_dir, self.away = how, log_dir, tmp_path / "away"

    def start(self) -> None:
        if self.how == "deleted":
            shutil.rmtree(self.log_dir)
        else:
            self.log_dir.rename(self.away)

    def end(self) -> None:
        if self.how == "deleted":
            self.log_dir.mkdir()
        else:
            self.away.rename(self.log_dir)


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_drop_keeps_serving_buffers_then_drops_and_recovers(tmp_path, how):
    log_dir = tmp_path / "log"
    alloc = Allocator(
        config(), seed=1, log_dir=log_dir, log_rotate_rows=10, log_flush_interval_s=0.02
    )
    ids = [alloc.decide(CANDS, timestamp=T0 + i).decision_id for i in range(5)]
    wait_for(lambda: alloc.metrics()["log_buffered_rows"] == 0)
    outage = Outage(how, log_dir, tmp_path)
    outage.start()  # the disk goes away under the writer
    ids += [alloc.decide(CANDS, timestamp=T0 + 5).decision_id]
    wait_for(lambda: not alloc.metrics()["log_healthy"])
    for i in range(6, 40):  # never an error: buffered up to 2 * rotate_rows, then dropped
        ids.append(alloc.decide(CANDS, timestamp=T0 + i).decision_id)
    m = alloc.metrics()
    assert m["log_errors"] >= 1 and "No such file or directory" in m["log_last_error"]
    assert m["log_buffered_rows"] == 20 and m["log_dropped"] == 40 - 5 - 20  # 5 on disk, 20 kept
    assert m["decisions"] == 40 and m["log_refused"] == 0
    outage.end()  # the disk is back: the buffered rows go out
    wait_for(lambda: alloc.metrics()["log_healthy"])
    alloc.close()
    log = load_decision_log(log_dir)
    # what was on disk (if it came back), then what was buffered, in order; the rest
    # dropped. The buffered rows name arms by the catalogue written before the outage: a
    # deleted directory took it along, and the writer wrote it again
    assert list(log.decision_id) == (ids[:25] if how == "moved" else ids[5:25])


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_raise_refuses_with_nothing_changed_and_logs_every_decision_made(tmp_path, how):
    log_dir = tmp_path / "log"
    cfg = config(on_log_error="raise")
    alloc = Allocator(cfg, seed=2, log_dir=log_dir, log_flush_interval_s=0.02)
    made = [alloc.decide(CANDS, timestamp=T0 + i).decision_id for i in range(5)]
    wait_for(lambda: alloc.metrics()["log_buffered_rows"] == 0)
    outage = Outage(how, log_dir, tmp_path)
    outage.start()
    made.append(alloc.decide(CANDS, timestamp=T0 + 5).decision_id)  # buffered, not yet failed
    wait_for(lambda: not alloc.metrics()["log_healthy"])
    before = state(alloc)
    with pytest.raises(DecisionLogError, match="on_log_error = raise refuses calls"):
        alloc.decide(CANDS, timestamp=T0 + 6)
    with pytest.raises(DecisionLogError):
        alloc.decide_many([{"candidates": CANDS, "timestamp": T0 + 6}])
    with pytest.raises(DecisionLogError):
        alloc.update(made[0], {"order": 1}, timestamp=T0 + 6)
    with pytest.raises(DecisionLogError):
        alloc.expire(T0 + 10_000)
    assert_same(before, state(alloc))
    assert alloc.metrics()["log_refused"] == 4
    outage.end()
    wait_for(lambda: alloc.metrics()["log_healthy"])
    made.append(alloc.decide(CANDS, timestamp=T0 + 7).decision_id)
    alloc.close()
    # every decision the allocator returned since the outage is logged (and those before
    # it if their parts came back): none made without its record
    assert list(load_decision_log(log_dir).decision_id) == (made if how == "moved" else made[5:])


def _many(*requests: dict) -> Callable[[Allocator], object]:
    return lambda a: a.decide_many(
        [{"candidates": CANDS, "timestamp": T0 + 1, **r} for r in requests]
    )


BAD_LOG_FIELDS = [
    (lambda a: a.decide(CANDS, timestamp=T0 + 1, request_id=5),
     "request_id = 5: expected a string"),
    (lambda a: a.decide(CANDS, timestamp=T0 + 1, attrs={3: "x"}),
     r"attrs\[3\] = 'x': expected string keys"),
    (_many({"request_id": 7}), r"requests\[0\]: request_id = 7"),
    # lone surrogates: no log part can hold them (they once failed the log's conversion
    # after the decision was made: a raw UnicodeEncodeError, or a silently dead flusher)
    (lambda a: a.decide(CANDS, timestamp=T0 + 1, request_id="q\ud800"),
     r"request_id = 'q\\ud800': expected a string \(UTF-8 text\)"),
    (lambda a: a.decide(CANDS, timestamp=T0 + 1, attrs={"slot": "top\udfff"}),
     r"attrs\['slot'\] = 'top\\udfff': expected string keys and values \(UTF-8 text\)"),
    (lambda a: a.decide(CANDS, timestamp=T0 + 1, attrs={"\ud800": "top"}), r"attrs\['\\ud800'\]"),
    # the batch's plain path (every field a str) too, before anything is decided
    (_many({"request_id": "q1"}, {"request_id": "q\ud800"}),
     r"requests\[1\]: request_id = 'q\\ud800'"),
    (_many({"attrs": {"slot": "\udc00"}}), r"requests\[0\]: attrs\['slot'\] = '\\udc00'"),
    # an arm id or group every later decision's log rows would have to carry
    (lambda a: a.add_arms(["merchant:9\udc00"], "mini_shop"),
     r"ids\[0\] = 'merchant:9\\udc00': expected UTF-8 text"),
    (lambda a: a.add_arms(["merchant:9"], "shop\ud800"),
     "group must be a non-empty string of UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "match"), BAD_LOG_FIELDS)
def test_bad_log_fields_are_refused_before_the_decision(tmp_path, call, match):
    alloc = Allocator(config(), seed=3, log_dir=tmp_path / "log")
    twin = Allocator(config(), seed=3, log_dir=tmp_path / "twin")
    for a in (alloc, twin):
        a.decide(CANDS, timestamp=T0)
    before = state(alloc)
    with pytest.raises(InvalidInputError, match=match):
        call(alloc)
    assert_same(before, state(alloc))
    requests = [{"candidates": CANDS, "timestamp": T0 + 2 + i, "request_id": f"q{i}",
                 "attrs": {"slot": "top"}} for i in range(4)]  # fmt: skip
    for a in (alloc, twin):
        a.decide(CANDS, timestamp=T0 + 1, request_id="q", attrs={"slot": "top"})
        a.decide_many(requests)
    assert_same(twin_state(twin), twin_state(alloc))
    for a in (alloc, twin):
        a.close()
    logs = [load_decision_log(tmp_path / name) for name in ("log", "twin")]
    assert len(logs[0]) == len(logs[1]) == 6
    np.testing.assert_array_equal(logs[0].arm_id, logs[1].arm_id)
    assert list(logs[0].request_id) == [None, "q", "q0", "q1", "q2", "q3"]


def autosaving(tmp_path, policy: str) -> tuple[Allocator, object]:
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    alloc = Allocator(config(on_autosave_error=policy), seed=4, autosave_path=snaps / "a.npz",
                      autosave_every_s=10.0)  # fmt: skip
    alloc.decide(CANDS, timestamp=T0)  # starts the autosave clock
    return alloc, snaps


def test_a_failing_autosave_is_skipped_counted_and_retried(tmp_path):
    alloc, snaps = autosaving(tmp_path, "skip")
    shutil.rmtree(snaps)
    alloc.decide(CANDS, timestamp=T0 + 10)  # the autosave fails; the decision stands
    alloc.decide(CANDS, timestamp=T0 + 15)  # not retried before the next interval
    m = alloc.metrics()
    assert m["autosave_errors"] == 1 and m["saves"] == 0 and m["decisions"] == 3
    assert (
        "SnapshotError" in m["autosave_last_error"] and "does not exist" in m["autosave_last_error"]
    )
    snaps.mkdir()
    alloc.decide(CANDS, timestamp=T0 + 20)
    assert alloc.metrics()["saves"] == 1 and (snaps / "a.npz").exists()
    assert Allocator.load(snaps / "a.npz").metrics()["decisions"] == 4


def test_a_failing_autosave_under_raise_refuses_calls_until_a_save(tmp_path):
    alloc, snaps = autosaving(tmp_path, "raise")
    shutil.rmtree(snaps)
    d = alloc.decide(CANDS, timestamp=T0 + 10)  # this call completes: its autosave failed
    before = state(alloc)
    with pytest.raises(AutosaveError, match="on_autosave_error = raise refuses calls"):
        alloc.decide(CANDS, timestamp=T0 + 11)
    with pytest.raises(AutosaveError):
        alloc.update(d.decision_id, {"order": 1}, timestamp=T0 + 11)
    assert_same(before, state(alloc))
    alloc.save(tmp_path / "by_hand.npz")  # the operator saves elsewhere: serving resumes
    alloc.update(d.decision_id, {"order": 1}, timestamp=T0 + 11)
    assert alloc.metrics()["autosave_errors"] == 1
