"""Forged snapshots — valid checksums over bad contents — are refused with a
SnapshotError before any kernel sees them; the loading process never dies by a signal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from allocator import Allocator, SnapshotError
from allocator.snapshot import read_snapshot, write_snapshot
from tests.serving.helpers import T0, config

Arrays = dict[str, np.ndarray]
Meta = dict


def _set(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays, Meta], None]:
    def change(arrays: Arrays, meta: Meta) -> None:
        arrays[name] = fn(arrays[name].copy())

    return change


def _poke(a: np.ndarray, value: float, where: int = 0) -> np.ndarray:
    a.reshape(-1)[where] = value
    return a


FORGERIES: dict[str, Callable[[Arrays, Meta], None]] = {
    "winner out of range": _set("policy.winner", lambda a: _poke(a, 10**9)),
    "winner below -1": _set("policy.winner", lambda a: _poke(a, -7)),
    "winner of the wrong size": _set("policy.winner", lambda a: a[:3]),
    "bank of the wrong width": _set("policy.bank", lambda a: a[:, :5].copy()),
    "NaN statistic": _set("policy.s1", lambda a: _poke(a, np.nan)),
    "inf bank draw": _set("policy.bank", lambda a: _poke(a, np.inf)),
    "t_last after the clock": _set("policy.t_last", lambda a: _poke(a, 10**12)),
    "negative count": _set("policy.n_obs", lambda a: _poke(a, -1)),
    "wrong dtype": _set("policy.s0", lambda a: a.astype(np.float32)),
    "state for more arms than registered": _set("policy.n_synced", lambda a: a + 5),
    "ring position out of range": _set("constraints.st_i", lambda a: _poke(a, 10**6)),
    "NaN queue": _set("constraints.st_f", lambda a: _poke(a, np.nan)),
    "group code out of range": _set("registry.arm_group", lambda a: _poke(a, 99)),
    "active slot without an arm": _set("registry.active", lambda a: _poke(a, True, -1)),
    "pending arm out of range": _set("pending.arms", lambda a: _poke(a, 10**6)),
    "NaN pending time": _set("pending.timestamps", lambda a: _poke(a, np.nan)),
    "missing array": lambda arrays, meta: arrays.pop("policy.s1"),
    "unknown time mode": lambda arrays, meta: meta.update(time_mode="lunar"),
}


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    alloc = Allocator(config(reward_wait_s=1e6), seed=1)
    for i in range(40):
        d = alloc.decide(["taobao", "douyin", "merchant:1", "merchant:2"], timestamp=T0 + i)
        if i % 2:
            alloc.update(d.decision_id, {"order": 1.0})
    path = tmp_path_factory.mktemp("snap") / "genuine.npz"
    alloc.save(path)
    return path


def forge(genuine: Path, directory: Path) -> list[Path]:
    paths = []
    for i, change in enumerate(FORGERIES.values()):
        arrays, meta = read_snapshot(genuine)
        change(arrays, meta)
        path = directory / f"forged_{i}.npz"
        write_snapshot(path, arrays, meta)  # a fresh, valid checksum over bad contents
        paths.append(path)
    return paths


@pytest.mark.parametrize("name", list(FORGERIES))
def test_each_forgery_is_a_snapshot_error(genuine, tmp_path, name):
    arrays, meta = read_snapshot(genuine)
    FORGERIES[name](arrays, meta)
    path = tmp_path / "forged.npz"
    write_snapshot(path, arrays, meta)
    with pytest.raises(SnapshotError):
        Allocator.load(path)
    Allocator.load(genuine)  # and the genuine one still loads


def test_forgeries_never_kill_the_loading_process(genuine, tmp_path):
    paths = forge(genuine, tmp_path)
    script = textwrap.dedent(
        """
        import sys
        from allocator import Allocator, SnapshotError
        for path in sys.argv[1:]:
            try:
                alloc = Allocator.load(path)
                alloc.decide(["taobao", "douyin", "merchant:1"], timestamp=1_760_000_100.0)
                print("LOADED", path)
            except SnapshotError:
                print("REFUSED", path)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.count("REFUSED") == len(paths), out.stdout
