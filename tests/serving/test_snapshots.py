"""save → load resumes exactly; corrupt, truncated, foreign or half-written files never load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from allocator import SnapshotError, UpdateStatus
from allocator.serving import Allocator
from tests.serving.helpers import T0, config, context_for, without_epoch

CANDS = ["taobao", "douyin", "merchant:1", "merchant:3", "merchant:4"]
ROOT = Path(__file__).resolve().parents[2]


def drive(alloc: Allocator, kind: str, start: int, n: int) -> list[tuple]:
    out = []
    for i in range(start, start + n):
        d = alloc.decide(
            CANDS, context=context_for(kind, i), attrs={"slot": "top"}, timestamp=T0 + i
        )
        out.append(
            (without_epoch(d.decision_id), d.arm_id, d.propensity, d.forced, d.model_version)
        )
        if i % 2 == 0:
            alloc.update(d.decision_id, {"order": float(i % 5 == 0)}, timestamp=T0 + i)
    return out


@pytest.mark.parametrize(
    "kind",
    ["beta_bernoulli", "normal_gamma", "linear_gaussian", "shared_linear", "logistic",
     "shared_logistic", "hybrid_linear", "hybrid_logistic"],
)  # fmt: skip
@pytest.mark.heavy
def test_save_load_then_the_next_10k_decisions_are_identical(tmp_path, kind):
    alloc = Allocator(config(kind, reward_wait_s=50.0), seed=11)
    drive(alloc, kind, 0, 500)
    alloc.save(tmp_path / "snap.npz")
    restored = Allocator.load(tmp_path / "snap.npz")
    assert drive(restored, kind, 500, 10_000) == drive(alloc, kind, 500, 10_000)
    assert {**restored.metrics(), "saves": 1} == alloc.metrics()


def test_damaged_files_are_refused(tmp_path):
    alloc = Allocator(config(), seed=1)
    drive(alloc, "beta_bernoulli", 0, 50)
    good = tmp_path / "good.npz"
    alloc.save(good)
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    for cut in sorted(rng.integers(1, len(data) - 1, 20)):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(SnapshotError, match=r"corrupt or truncated|checksum|not an entry"):
            Allocator.load(tmp_path / "cut.npz")
    flipped = bytearray(data)
    # inside an array's bytes: a flip in a zip local header (e.g. its CRC copy, which the
    # reader takes from the central directory) changes nothing that is loaded
    flipped[data.index(b"policy.bank.npy") + 200] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(SnapshotError):
        Allocator.load(tmp_path / "flip.npz")
    np.savez(tmp_path / "foreign.npz", a=np.arange(3))
    with pytest.raises(SnapshotError, match="not an entry-alloc snapshot"):
        Allocator.load(tmp_path / "foreign.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(SnapshotError, match="corrupt or truncated"):
        Allocator.load(tmp_path / "junk.npz")
    with pytest.raises(SnapshotError, match="does not exist"):
        Allocator.load(tmp_path / "missing.npz")
    Allocator.load(good)


def kill_during_save(tmp_path: Path, trials: int, seed: int) -> None:
    """``trials`` writers, each SIGKILLed at a random moment of its save loop (saves take a
    few ms: 0–0.5 s spans many of them); the file must load as the last completed save or
    the one under way."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "snap.npz"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    env["PYTHONPATH"] = str(ROOT)
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("snapshot_child.py")), str(path),
         "20000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    try:
        for trial in range(trials):
            server.stdin.write("go\n")
            server.stdin.flush()
            announced = server.stdout.readline().split()
            assert announced[0] == "pid", announced
            first = server.stdout.readline()  # one complete save exists from here on
            assert first.strip().isdigit(), first
            time.sleep(float(rng.uniform(0.0, 0.5)))
            os.kill(int(announced[1]), signal.SIGKILL)
            lines = []
            while not (line := server.stdout.readline().strip()).endswith("done"):
                assert line, "the fork server died"
                lines.append(line)
            lines.append(line.removesuffix("done"))  # a count the kill cut short of "\n"
            completed = [int(first)] + [int(x) for x in lines if x.isdigit()]
            loaded = Allocator.load(path)
            # The file is the last completed save, or the one being written when killed.
            decided = loaded.metrics()["decisions"]
            assert decided - 1 in (completed[-1], completed[-1] + 1), (trial, completed)
            loaded.save(path)  # and the killed writer's temp file is cleaned up
            assert not list(tmp_path.glob(".snap.npz.*.tmp")), trial
    finally:
        server.kill()
        server.wait()


@pytest.mark.heavy
def test_kill_during_save_leaves_a_complete_snapshot(tmp_path):
    kill_during_save(tmp_path, trials=3, seed=1)


@pytest.mark.slow
def test_kill_during_save_50_trials(tmp_path):
    kill_during_save(tmp_path, trials=50, seed=2)


def test_restores_never_reissue_ids_so_late_feedback_for_lost_decisions_is_unknown(tmp_path):
    """Saved after 5 decisions, 5 more made and lost with the process; two restores of the
    file each issue 5 new ids. Feedback for the lost decisions must not teach the new ones."""
    alloc = Allocator(config(reward_wait_s=1e6), seed=3)
    kept = [alloc.decide(CANDS, timestamp=T0 + i).decision_id for i in range(5)]
    alloc.save(tmp_path / "snap.npz")
    lost = [alloc.decide(CANDS, timestamp=T0 + i).decision_id for i in range(5, 10)]
    for restore in range(2):
        restored = Allocator.load(tmp_path / "snap.npz")
        new = [restored.decide(CANDS, timestamp=T0 + i).decision_id for i in range(5, 10)]
        # the counters continue where the snapshot stopped: only the epoch tells them apart
        assert [without_epoch(i) for i in new] == [without_epoch(i) for i in lost]
        assert not set(new) & set(lost), restore
        n_obs = restored.policy.n_observations.copy()
        assert [restored.update(i, {"order": 1.0}) for i in lost] == [UpdateStatus.UNKNOWN] * 5
        np.testing.assert_array_equal(restored.policy.n_observations, n_obs)
        assert restored.metrics()["unknown"] == 5 and restored.metrics()["pending"] == 10
        statuses = [restored.update(i, {"order": 1.0}) for i in kept + new]
        assert statuses == [UpdateStatus.APPLIED] * 10
        lost = new  # the next restore must not reissue these either
