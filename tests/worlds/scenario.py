"""Shared default world and stream for the world tests, built once per process; sizes shrink
when numba runs as plain Python (``NUMBA_DISABLE_JIT=1``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numba

from allocator.scenario.world import Chunk, World, WorldConfig

JIT = not numba.config.DISABLE_JIT


@dataclass(frozen=True)
class Sizes:
    stream: int  # impressions of the shared default-world stream
    small: int  # impressions of quick determinism / retrieval streams
    outcome_reps: int  # outcome redraws of the shared stream


SIZES = Sizes(300_000, 20_000, 4) if JIT else Sizes(6_000, 600, 3)


@cache
def default_world() -> World:
    return World(WorldConfig(), seed=7)


@cache
def shared_chunk() -> Chunk:
    """One chunk holding the whole shared stream of the default world."""
    return next(default_world().stream(SIZES.stream, chunk_size=SIZES.stream, seed=11))
