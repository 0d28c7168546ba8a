"""An allocator's snapshot: the engine's arrays, pending decisions and the facade's books.

:func:`allocator_snapshot` and :func:`read_allocator_snapshot` are the two directions; the
file format (checksummed ``.npz`` plus JSON meta, no pickle) is :mod:`allocator.snapshot`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import SnapshotError, brief
from allocator.serving.config import AllocatorConfig, config_without_arms
from allocator.serving.pending import PendingTable
from allocator.snapshot import read_snapshot

SNAPSHOT_SCHEMA = 2
COUNTERS = (
    "decisions", "updates", "duplicates", "unknown", "expired", "evicted", "rejected",
    "refreshes", "saves",
)  # fmt: skip


@dataclass
class Books:
    """The facade's own counters and clocks (serving time: the caller's epoch seconds)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    next_id: int = 0
    last_t: float = -math.inf  # latest decision time
    last_refresh_t: float = -math.inf  # time of the latest timed refresh check
    time_mode: str | None = None  # "event" or "wall" once fixed (see serving.clock)

    def to_meta(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counts),
            "next_id": self.next_id,
            "last_t": float(self.last_t),
            "last_refresh_t": float(self.last_refresh_t),
            "time_mode": self.time_mode,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Books:
        return cls(
            counts={k: int(meta["counters"].get(k, 0)) for k in COUNTERS},
            next_id=int(meta["next_id"]),
            last_t=float(meta["last_t"]),
            last_refresh_t=float(meta["last_refresh_t"]),
            time_mode=_time_mode(meta.get("time_mode")),
        )


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
    books: Books,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """Arrays and meta that resume exactly where the allocator is."""
    arrays, policy_meta = engine.export_state()
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


def read_allocator_snapshot(path: str | Path) -> Restored:
    """Read and check a snapshot file and rebuild its parts; a typed error if anything is
    missing or inconsistent."""
    arrays, meta = read_snapshot(path)
    if meta.get("schema") != SNAPSHOT_SCHEMA:
        raise SnapshotError(
            f"snapshot {path} has schema {meta.get('schema')}, expected {SNAPSHOT_SCHEMA}"
        )
    try:
        config = config_without_arms(meta["config"])
        seed = int(meta["seed"])
        engine = Engine.restore(
            config.engine.policy, config.constraints, seed, arrays, meta["policy"]
        )
        pending = PendingTable.from_arrays(
            config.serving.pending_capacity, arrays, engine.registry.n_arms,
            engine.policy.n_features,
        )  # fmt: skip
        return Restored(config, seed, str(meta["replica"]), engine, pending, Books.from_meta(meta))
    except (KeyError, TypeError, ValueError) as err:
        raise SnapshotError(f"snapshot {path} is incomplete or inconsistent: {err}") from None
