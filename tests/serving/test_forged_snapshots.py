"""Forged snapshots — valid checksums over bad contents — are refused with a
SnapshotError before any kernel sees them; the loading process never dies by a signal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from allocator import Allocator, SnapshotError
from allocator.snapshot import read_snapshot, write_snapshot
from tests.serving.helpers import T0, config

ROOT = Path(__file__).resolve().parents[2]

Arrays = dict[str, np.ndarray]
Meta = dict


def _set(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays, Meta], None]:
    def change(arrays: Arrays, meta: Meta) -> None:
        arrays[name] = fn(arrays[name].copy())

    return change


def _meta(*path: str | int, **values: object) -> Callable[[Arrays, Meta], None]:
    """Set ``values`` in the meta mapping at ``path`` (keys and list positions)."""

    def change(arrays: Arrays, meta: Meta) -> None:
        node = meta
        for key in path:
            node = node[key]
        node.update(values)

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
    # a lone surrogate: no decision log could hold the arm's rows
    "surrogate in an arm id": _set("registry.ids", lambda a: _poke(a, "m\ud800", 2)),
    "pending arm out of range": _set("pending.arms", lambda a: _poke(a, 10**6)),
    "NaN pending time": _set("pending.timestamps", lambda a: _poke(a, np.nan)),
    "missing array": lambda arrays, meta: arrays.pop("policy.s1"),
    "unknown time mode": lambda arrays, meta: meta.update(time_mode="lunar"),
    "pending ids of the wrong shape": _set("pending.ids", lambda a: a.reshape(-1, 1)),
    "pending contexts of the wrong width": _set(
        "pending.contexts", lambda a: np.zeros((a.shape[0], 3))
    ),
    "huge bank winner": _set("policy.winner", lambda a: np.zeros(2**20, np.int64)),
    "huge contract ring": _set("constraints.ring", lambda a: np.zeros((*a.shape[:2], 2**19))),
    "huge bank_rows": lambda arrays, meta: meta["config"]["engine"]["policy"].update(
        bank_rows=2**40
    ),
    "huge pending capacity": lambda arrays, meta: meta["config"]["serving"].update(
        pending_capacity=2**40
    ),
    "NaN last_t": lambda arrays, meta: meta.update(last_t=float("nan")),
    "inf last_refresh_t": lambda arrays, meta: meta.update(last_refresh_t=float("inf")),
    "negative next_id": lambda arrays, meta: meta.update(next_id=-5),
    "huge next_id": lambda arrays, meta: meta.update(next_id=10**30),
    "negative counter": lambda arrays, meta: meta["counters"].update(decisions=-3),
    "seed as a string": lambda arrays, meta: meta.update(seed="1"),
    "replica not a string": lambda arrays, meta: meta.update(replica=[1, 2]),
    "malformed epoch": lambda arrays, meta: meta.update(epoch="../../x"),
    "policy meta not a mapping": lambda arrays, meta: meta.update(policy=None),
    "RNG increment below 0": _meta("policy", "rng", "state", inc=-1),
    "RNG state past 64 bits": _meta("policy", "rng", "state", state=2**200),
    "negative prior": _set("policy.a0", lambda a: _poke(a, -1e308)),
    "prior beyond double-precision moments": _set("policy.b0", lambda a: _poke(a, 1e308)),
    "statistic beyond what the clock allows": _set("policy.s1", lambda a: _poke(a, 1e300)),
    # each refused by the live config too: a snapshot's config is held to the same rules
    "default outcome above 1 for a binary family": _meta(
        "config", "serving", "default_outcome", order=1.5
    ),
    "refresh period past the kernels' integers": _meta(
        "config", "engine", "policy", refresh_every=2**200
    ),
    "contract on a group the catalogue lacks": _meta(
        "config", "constraints", "constraints", 0, "target", group="nosuch"
    ),
}

#: forgeries of a shared linear model's state (a ``genuine_shared`` snapshot)
SHARED_FORGERIES: dict[str, Callable[[Arrays, Meta], None]] = {
    # roll_normals would index past the bank: heap corruption, not an error
    "bank cursor past the bank": _set("policy.z_cursor", lambda a: _poke(a, 2**63 - 1)),
    "bank cursor at the bank's end": lambda arrays, meta: arrays.update(
        {"policy.z_cursor": np.array([arrays["policy.z"].shape[1]], np.int64)}
    ),
    "Gram matrix beyond what the clock allows": _set("policy.g", lambda a: _poke(a, 1e308)),
    "Gram matrix not positive semi-definite": _set("policy.g", lambda a: a - 50.0 * np.eye(len(a))),
    "asymmetric Gram matrix": _set("policy.g", lambda a: _poke(a, 3.0, 1)),
    "arm features beyond max_abs_input": _set("policy.features", lambda a: _poke(a, 1e300)),
    "pending context beyond max_abs_input": _set("pending.contexts", lambda a: _poke(a, 1e300)),
    "objective beyond max_abs_reward": _meta("config", "engine", "objective", order=1e60),
    "default outcome beyond max_abs_reward": _meta(
        "config", "serving", "default_outcome", gmv=1e300
    ),
}


def lying_archives(directory: Path) -> list[Path]:
    """Containers whose members claim more than they hold: a .npy header declaring 8 TiB
    over 16 bytes, and a deflated member (a decompression bomb's shape)."""
    paths = []
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}
    path = directory / "huge-header.npz"
    with zipfile.ZipFile(path, "w") as zf, zf.open("policy.s1.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)  # type: ignore[arg-type]
        member.write(bytes(16))
    paths.append(path)
    path = directory / "deflated.npz"
    deflated = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
    with deflated as zf, zf.open("policy.s1.npy", "w") as member:
        np.lib.format.write_array(member, np.zeros(10**6))
    paths.append(path)
    return paths


def test_members_declaring_more_than_they_hold_are_refused(tmp_path):
    huge, deflated = lying_archives(tmp_path)
    with pytest.raises(SnapshotError, match="declares a size it does not hold"):
        Allocator.load(huge)
    with pytest.raises(SnapshotError, match="compressed"):
        Allocator.load(deflated)


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


@pytest.fixture(scope="module")
def genuine_shared(tmp_path_factory) -> Path:
    alloc = Allocator(config("shared_linear", reward_wait_s=1e6), seed=1)
    rng = np.random.default_rng(0)
    for i in range(60):
        d = alloc.decide(
            ["taobao", "douyin", "merchant:1", "merchant:2"], context=rng.normal(size=3),
            timestamp=T0 + i,
        )  # fmt: skip
        if i % 2:  # the others stay pending, their contexts saved with them
            alloc.update(d.decision_id, {"order": float(i % 3 == 0), "gmv": 10.0})
    path = tmp_path_factory.mktemp("snap") / "genuine_shared.npz"
    alloc.save(path)
    return path


@pytest.mark.parametrize(
    ("snapshot", "name"),
    [("genuine", n) for n in FORGERIES] + [("genuine_shared", n) for n in SHARED_FORGERIES],
)
def test_each_forgery_is_a_snapshot_error(request, tmp_path, snapshot, name):
    genuine = request.getfixturevalue(snapshot)
    arrays, meta = read_snapshot(genuine)
    {**FORGERIES, **SHARED_FORGERIES}[name](arrays, meta)
    path = tmp_path / "forged.npz"
    write_snapshot(path, arrays, meta)
    with pytest.raises(SnapshotError):
        Allocator.load(path)
    alloc = Allocator.load(genuine)  # the genuine one still loads and serves
    context = np.zeros(3) if snapshot == "genuine_shared" else None
    alloc.decide(["taobao", "merchant:1"], context=context, timestamp=T0 + 100)


def test_forgeries_never_kill_the_loading_process(genuine, tmp_path):
    paths = forge(genuine, tmp_path) + lying_archives(tmp_path)
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


def fuzz(genuine: Path, n: int, seed: int) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("snapshot_fuzz.py")), str(genuine),
         str(n), str(seed)],
        capture_output=True, text=True, timeout=1800, check=False, env=env,
    )  # fmt: skip
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    counts: dict[str, int] = json.loads(out.stdout)
    assert sum(counts.values()) == n
    return counts


def test_corrupted_bytes_are_refused_or_harmless(genuine, tmp_path):
    shutil.copy(genuine, tmp_path / "genuine.npz")
    counts = fuzz(tmp_path / "genuine.npz", 400, seed=1)
    assert counts["refused"] >= 300, counts


@pytest.mark.slow
def test_corrupted_bytes_fuzz_4000(genuine, tmp_path):
    shutil.copy(genuine, tmp_path / "genuine.npz")
    counts = fuzz(tmp_path / "genuine.npz", 4000, seed=2)
    assert counts["refused"] >= 3000, counts
