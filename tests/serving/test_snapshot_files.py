"""Snapshot files as files: only regular files are read (never blocking), sizes are bounded,
temp files are exclusive, unpredictable, never follow a planted symlink and never outlive a
failed or crashed save, and published snapshots can be authenticated with a shared key."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from allocator import Allocator, ConfigError, SnapshotError
from allocator.snapshot import ORPHAN_AGE_S, remove_orphans
from tests.serving.helpers import T0, config

ROOT = Path(__file__).resolve().parents[2]
CANDS = ["taobao", "douyin", "merchant:1", "merchant:2"]
KEY = b"0123456789abcdef-shared-secret"


def served(seed: int = 1, **kwargs) -> Allocator:
    alloc = Allocator(config(reward_wait_s=1e6), seed=seed, **kwargs)
    for i in range(20):
        d = alloc.decide(CANDS, timestamp=T0 + i)
        if i % 2:
            alloc.update(d.decision_id, {"order": 1.0})
    return alloc


def state_of(alloc: Allocator) -> dict[str, np.ndarray]:
    return alloc.snapshot_state()[0]


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def load_in_thread(path: Path) -> BaseException | None:
    """Allocator.load(path) on a daemon thread: its error, or a failure if it blocks."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            Allocator.load(path)
            result.append(None)
        except BaseException as err:  # handed to the test
            result.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60.0)
    assert not thread.is_alive(), f"loading {path} blocked"
    return result[0]


def test_fifos_directories_devices_and_links_to_them_are_refused_unblocked(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    (tmp_path / "dir.npz").mkdir()
    specials = [fifo, tmp_path / "dir.npz"]
    if Path("/dev/zero").exists():
        specials.append(Path("/dev/zero"))
    for target in list(specials):
        link = tmp_path / f"link-to-{target.name}"
        link.symlink_to(target)
        specials.append(link)
    for path in specials:
        err = load_in_thread(path)
        assert isinstance(err, SnapshotError), (path, err)
        assert "not a regular file" in str(err)
    # a symlink to a regular snapshot is a regular file
    served().save(tmp_path / "real.npz")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    assert load_in_thread(tmp_path / "link.npz") is None


def test_files_over_the_bound_are_refused_unread(tmp_path):
    alloc = served()
    path = tmp_path / "snap.npz"
    alloc.save(path)
    size = path.stat().st_size
    with pytest.raises(
        SnapshotError, match=rf"has {size} bytes, more than the bound of {size - 1}"
    ):
        Allocator.load(path, max_bytes=size - 1)
    Allocator.load(path, max_bytes=size)
    before = state_of(alloc)
    with pytest.raises(SnapshotError, match="refused unread"):
        alloc.load_published(path, max_bytes=size - 1)
    assert_same_state(before, state_of(alloc))


def test_save_into_a_missing_directory_is_a_typed_error(tmp_path):
    alloc = served()
    before = alloc.metrics()
    with pytest.raises(SnapshotError, match=r"directory .*missing.* does not exist"):
        alloc.save(tmp_path / "missing" / "snap.npz")
    assert alloc.metrics() == before
    (tmp_path / "isdir.npz").mkdir()
    with pytest.raises(SnapshotError, match="cannot save snapshot"):
        alloc.save(tmp_path / "isdir.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["isdir.npz"]  # no temp file left


def test_planted_symlinks_are_never_followed(tmp_path):
    victims = {name: tmp_path / name for name in ("victim-a", "victim-b", "victim-c")}
    for victim in victims.values():
        victim.write_bytes(b"precious")
    path = tmp_path / "snap.npz"
    pid = os.getpid()
    # the old predictable temp name, a name of the new pattern, and the target itself
    (tmp_path / f".snap.npz.{pid}.tmp").symlink_to(victims["victim-a"])
    (tmp_path / f".snap.npz.{pid}.abcd1234.tmp").symlink_to(victims["victim-b"])
    path.symlink_to(victims["victim-c"])
    alloc = served()
    alloc.save(path)
    alloc.save(path)
    for victim in victims.values():
        assert victim.read_bytes() == b"precious"
    assert not path.is_symlink() and path.is_file()  # the link was replaced, not followed
    assert (tmp_path / f".snap.npz.{pid}.tmp").is_symlink()  # not ours: left alone
    assert_same_state(state_of(Allocator.load(path)), state_of(alloc))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_orphaned_temp_files_are_cleaned_by_the_next_save(tmp_path):
    path = tmp_path / "snap.npz"
    gone, live = dead_pid(), os.getpid()
    names = {
        f".snap.npz.{gone}.tmp": True,  # before this change: pid only
        f".snap.npz.{gone}.k2j_9xq0.tmp": True,  # a crashed writer
        f".snap.npz.{live}.a1b2c3d4.tmp": False,  # a live writer, recent
        f".snap.npz.{live}.zzzzzzzz.tmp": True,  # a live pid, but untouched for too long
        f".snap.npz.{gone}.tmp.keep": False,  # not our pattern
        f".other.npz.{gone}.tmp": False,  # another target's
        "snap.npz.tmp": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - ORPHAN_AGE_S - 60
    os.utime(tmp_path / f".snap.npz.{live}.zzzzzzzz.tmp", (old, old))
    (tmp_path / f".snap.npz.{gone}.ffffffff.tmp").mkdir()  # not a regular file: kept
    served().save(path)
    left = {p.name for p in tmp_path.iterdir()}
    for name, removed in names.items():
        assert (name not in left) == removed, name
    assert f".snap.npz.{gone}.ffffffff.tmp" in left
    assert remove_orphans(path) == []


def test_a_failed_save_leaves_no_temp_file(tmp_path):
    """A real write failure (the file-size limit: EFBIG) mid-save, in a child process."""
    script = textwrap.dedent(
        """
        import os, resource, signal, sys
        from allocator import Allocator, SnapshotError
        from tests.serving.helpers import config
        path = sys.argv[1]
        alloc = Allocator(config(n_merchants=5000), seed=1)
        alloc.save(path)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            alloc.save(path)
        except SnapshotError as err:
            print("REFUSED", err)
        print(alloc.metrics()["saves"])
        """
    )
    path = tmp_path / "snap.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED cannot save snapshot" in out.stdout, out.stdout
    assert out.stdout.split()[-1] == "1"  # the failed save is not counted
    assert [p.name for p in tmp_path.iterdir()] == ["snap.npz"]
    Allocator.load(path)  # the previous complete snapshot


# ------------------------------------------------------------------ authentication
def test_keyed_publication_is_adopted(tmp_path):
    key_file = tmp_path / "snapshot.key"
    key_file.write_bytes(KEY + b"\n")
    learner = served(seed=2, snapshot_key=KEY)
    replica = Allocator(config(reward_wait_s=1e6), seed=3, replica="a", snapshot_key=key_file)
    learner.save(tmp_path / "published.npz")
    replica.load_published(tmp_path / "published.npz")
    np.testing.assert_array_equal(replica.policy.n_observations, learner.policy.n_observations)
    restored = Allocator.load(tmp_path / "published.npz", snapshot_key=key_file)
    assert_same_state(state_of(restored), state_of(learner))


@pytest.mark.parametrize(
    ("writer_key", "reader_key", "match"),
    [
        (KEY, b"another key of 16+ bytes", "fails authentication: written with another key"),
        (None, KEY, r"not authenticated \(no tag\), and a snapshot key is required"),
        (KEY, None, r"authenticated \(tagged\), but no snapshot key is configured"),
    ],
)
def test_authentication_mismatches_are_refused_harmlessly(tmp_path, writer_key, reader_key, match):
    served(seed=2, snapshot_key=writer_key).save(tmp_path / "published.npz")
    replica = served(seed=3, snapshot_key=reader_key)
    before = state_of(replica)
    with pytest.raises(SnapshotError, match=match) as err:
        replica.load_published(tmp_path / "published.npz")
    assert_same_state(before, state_of(replica))
    with pytest.raises(SnapshotError, match=match):
        Allocator.load(tmp_path / "published.npz", snapshot_key=reader_key)
    for key in (writer_key, reader_key):
        if key is not None:
            assert key.decode() not in str(err.value)


def test_bad_keys_are_config_errors_that_never_show_the_key(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"tiny-secret\n")
    with pytest.raises(ConfigError, match=r"short.key: the key has 11 bytes, expected >= 16") as e:
        Allocator(config(), snapshot_key=short)
    assert "tiny-secret" not in str(e.value)
    with pytest.raises(ConfigError, match=r"missing\.key: cannot read it"):
        Allocator(config(), snapshot_key=tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="must be bytes or a key file path, got int"):
        Allocator(config(), snapshot_key=123)  # type: ignore[arg-type]
    alloc = Allocator(config(), snapshot_key=KEY)
    assert KEY.decode() not in repr(alloc) + repr(vars(alloc).keys())


def test_a_publication_lacking_arms_the_replica_added_is_refused_harmlessly(tmp_path):
    """A replica that added an arm the learner has not (yet) must not adopt the learner's
    shorter catalogue: its pending decisions on that arm would learn into an index the
    registry no longer has, and expire would fail on every later call."""
    learner = served(seed=2)
    learner.save(tmp_path / "published.npz")
    replica = served(seed=3)
    replica.add_arms(["merchant:new"], "mini_shop")
    for i in range(10):
        replica.decide(["taobao", "merchant:new"], timestamp=T0 + 100 + i)
    before = state_of(replica)
    with pytest.raises(SnapshotError, match=r"lacks 1 arm\(s\) this replica has"):
        replica.load_published(tmp_path / "published.npz")
    assert_same_state(before, state_of(replica))
    assert "merchant:new" in replica.registry.all_ids()
    replica.expire(T0 + 2e6)  # every pending decision falls due and is learned
    assert replica.decide(["taobao", "merchant:new"], timestamp=T0 + 2e6 + 1).arm_id
    # a learner that has the replica's arms, and more, is adopted
    learner.add_arms(["merchant:new", "merchant:newer"], "mini_shop")
    learner.save(tmp_path / "published.npz")
    replica.load_published(tmp_path / "published.npz")
    assert replica.registry.all_ids()[-2:] == ["merchant:new", "merchant:newer"]
