"""An allocator's snapshot: the engine's arrays, pending decisions and the facade's books.

:func:`allocator_snapshot` and :func:`read_allocator_snapshot` are the two directions, and
:func:`read_published` reads a learner's snapshot for a replica; the file format
(checksummed, optionally authenticated ``.npz`` plus JSON meta, no pickle) is
:mod:`allocator.snapshot`'s. Every value of the meta is checked like the arrays are: a
forged file is a :class:`SnapshotError`, never a NaN clock or a negative counter.

Decision ids are ``<replica>-<epoch>-<counter in hex>``. The epoch is 8 random hex digits
drawn when an allocator is built and again whenever one is restored (never the one the
snapshot recorded), so ids issued after a restore never repeat ids issued before it — by
the original process after its last save, or by an earlier restore of the same file —
and late feedback for a decision lost with a crash is ``UNKNOWN``, never applied to
another. It comes from the operating system's entropy, not the model's seeded streams: the
decisions themselves stay reproducible.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import SnapshotError, brief
from allocator.serving.clock import EPOCH_MAX, EPOCH_MIN
from allocator.serving.config import AllocatorConfig, check_groups, config_without_arms
from allocator.serving.pending import PendingTable
from allocator.snapshot import DEFAULT_MAX_BYTES, read_snapshot

_EPOCH = re.compile(r"[0-9a-f]{8}")

SNAPSHOT_SCHEMA = 2
COUNTERS = (
    "decisions", "updates", "duplicates", "unknown", "expired", "evicted", "rejected",
    "refreshes", "saves",
)  # fmt: skip


def new_epoch(avoid: str | None = None) -> str:
    """8 random hex digits, other than ``avoid``."""
    while (epoch := secrets.token_hex(4)) == avoid:
        pass
    return epoch


@dataclass
class Books:
    """The facade's own counters and clocks (serving time: the caller's epoch seconds)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    next_id: int = 0
    last_t: float = -math.inf  # latest decision time
    last_refresh_t: float = -math.inf  # time of the latest timed refresh check
    time_mode: str | None = None  # "event" or "wall" once fixed (see serving.clock)
    epoch: str = field(default_factory=new_epoch)  # of the decision ids issued
    #: the id head per replica, spelled once: the pending table keys on the same str object
    heads: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def head(self, replica: str) -> str:
        """``<replica>-<epoch>``, the common head of the decision ids issued here."""
        head = self.heads.get(replica)
        if head is None:
            head = self.heads[replica] = f"{replica}-{self.epoch}"
        return head

    def decision_ids(self, replica: str, n: int) -> tuple[str, int, list[str]]:
        """The next ``n`` decision ids (issued: the counter moves on), with their common
        head and the first counter (the pending table keys on those)."""
        first = self.next_id
        self.next_id += n
        head = self.head(replica)
        return head, first, [f"{head}-{k:x}" for k in range(first, first + n)]

    def decision_id(self, replica: str) -> tuple[str, int, str]:
        """:meth:`decision_ids` for one decision: ``(head, counter, id)``."""
        k = self.next_id
        self.next_id = k + 1
        head = self.head(replica)
        return head, k, f"{head}-{k:x}"

    def to_meta(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counts),
            "next_id": self.next_id,
            "last_t": float(self.last_t),
            "last_refresh_t": float(self.last_refresh_t),
            "time_mode": self.time_mode,
            "epoch": self.epoch,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Books:
        """Books as saved, checked, with a new id epoch (see the module docstring)."""
        counters = meta["counters"]
        if not isinstance(counters, dict):
            raise ValueError(f"counters = {brief(counters)}: expected a mapping")
        recorded = meta.get("epoch")  # absent in snapshots from before epochs
        if recorded is not None and not (isinstance(recorded, str) and _EPOCH.fullmatch(recorded)):
            raise ValueError(f"epoch = {brief(recorded)}: expected 8 hex digits")
        return cls(
            counts={k: _count(counters.get(k, 0), f"counters.{k}") for k in COUNTERS},
            next_id=_count(meta["next_id"], "next_id"),
            last_t=_time(meta["last_t"], "last_t"),
            last_refresh_t=_time(meta["last_refresh_t"], "last_refresh_t"),
            time_mode=_time_mode(meta.get("time_mode")),
            epoch=new_epoch(avoid=recorded),
        )


def _count(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise ValueError(f"{name} = {brief(value)}: expected an integer in [0, 2**63)")
    return value


def _time(value: Any, name: str) -> float:
    """A saved serving time: -inf (none yet) or epoch seconds in the clock's range."""
    if type(value) not in (int, float) or not (
        value == -math.inf or EPOCH_MIN <= value < EPOCH_MAX
    ):
        raise ValueError(f"{name} = {brief(value)}: expected -inf or epoch seconds in [2000, 2100)")
    return float(value)


def _time_mode(value: Any) -> str | None:
    if value not in (None, "event", "wall"):
        raise ValueError(f"time_mode = {brief(value)}: expected 'event', 'wall' or null")
    return value


@dataclass(frozen=True)
class Restored:
    """Everything :func:`read_allocator_snapshot` rebuilt."""

    config: AllocatorConfig
    seed: int
    replica: str
    engine: Engine
    pending: PendingTable
    books: Books


def allocator_snapshot(
    engine: Engine, pending: PendingTable, config: AllocatorConfig, seed: int, replica: str,
    books: Books, copy: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """Arrays and meta that resume exactly where the allocator is (``copy=False``: the
    model's arrays live, for a save that writes them before releasing the lock)."""
    arrays, policy_meta = engine.export_state(copy)
    arrays.update(pending.to_arrays(engine.policy.n_features))
    meta = {
        "schema": SNAPSHOT_SCHEMA,
        # the arm catalogue lives in the registry arrays, not in (slow) JSON
        "config": config.model_dump(mode="json", exclude={"arms"}),
        "seed": seed,
        "replica": replica,
        "policy": policy_meta,
        **books.to_meta(),
    }
    return arrays, meta


def read_allocator_snapshot(
    path: str | Path, key: bytes | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Restored:
    """Read and check a snapshot file and rebuild its parts; a typed error if anything is
    missing or inconsistent."""
    arrays, meta = _read(path, key, max_bytes)
    try:
        config = config_without_arms(meta["config"])
        seed = _count(meta["seed"], "seed")
        replica = meta["replica"]
        if not isinstance(replica, str) or not 0 < len(replica) <= 256:
            raise ValueError(f"replica = {brief(replica)}: expected a name of 1 to 256 characters")
        engine = Engine.restore(
            config.engine.policy, config.constraints, seed, arrays, meta["policy"], copy=False
        )
        check_groups(config.engine, config.constraints, set(engine.registry.groups))
        pending = PendingTable.from_arrays(
            config.serving.pending_capacity, arrays, engine.registry.n_arms,
            engine.policy.n_features, engine.policy.input_bound,
        )  # fmt: skip
        return Restored(config, seed, replica, engine, pending, Books.from_meta(meta))
    except (KeyError, TypeError, ValueError) as err:
        raise SnapshotError(f"snapshot {path} is incomplete or inconsistent: {err}") from None


def read_published(
    path: str | Path, config: AllocatorConfig, seed: int, key: bytes | None, max_bytes: int
) -> tuple[Engine, list[str]]:
    """A learner's published snapshot as an engine under this replica's ``config`` and
    ``seed``, with the learner's arm ids (for the caller's catalogue check)."""
    arrays, meta = _read(path, key, max_bytes)
    try:
        ids = arrays["registry.ids"].tolist()
        engine = Engine.restore(
            config.engine.policy, config.constraints, seed, arrays, meta["policy"], copy=False
        )
    except (KeyError, TypeError, ValueError) as err:
        raise SnapshotError(f"published snapshot {path} is incomplete: {err}") from None
    return engine, ids


def published_size_bound(engine: Engine) -> int:
    """The largest published snapshot a replica reads: 256 MiB plus 8 times the model and
    catalogue it holds (a learner's catalogue grows between publications, not eightfold)."""
    state = engine.policy.state
    model = sum(getattr(state, f.name).nbytes for f in state.fields)
    return 256 * 2**20 + 8 * (model + 1024 * engine.registry.capacity)


def _read(
    path: str | Path, key: bytes | None, max_bytes: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays, meta = read_snapshot(path, key=key, max_bytes=max_bytes)
    if meta.get("schema") != SNAPSHOT_SCHEMA:
        raise SnapshotError(
            f"snapshot {path} has schema {brief(meta.get('schema'))}, expected {SNAPSHOT_SCHEMA}"
        )
    return arrays, meta
