"""Catalogue changes while serving: arms added, arrays grown, in short holds of the lock.

The engine's own :meth:`~allocator.engine.Engine.add_arms` is already proportional to the
arms added, but a growth of the per-arm arrays copies the whole catalogue. Here that copy
is made in slices of :data:`GROW_SLICE` arms, taking the serving lock per slice; learning
that lands between slices is re-copied before the swap, and the replaced arrays are freed
after the lock is released. Arms are then added in slices of :func:`add_slice` arms: a
fixed amount of work per hold, so that a bulk add of 10^6 arms of a light family is not
250,000 holds of a call's fixed cost. The size depends on the family only, never on timing:
each slice's call rolls the sample bank, so the slicing is part of the seeded random stream
(same seed, same decisions).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from allocator.engine import Engine
from allocator.errors import InvalidInputError
from allocator.inputs import as_float_array, as_id_list

#: arms per lock hold while the per-arm arrays grow (a slice copies ~0.1 ms of memory)
GROW_SLICE = 256
#: the fewest arms in one add slice, however large an arm's state
ADD_SLICE = 4
#: the work of one add slice, in state values initialised (~30 ns each measured), an arm's
#: id checks and registration counting as ADD_ID_VALUES more: ~150 µs a hold
ADD_VALUES = 5_000
ADD_ID_VALUES = 32


def add_slice(values_per_arm: int) -> int:
    """Arms per lock hold when adding arms whose state holds ``values_per_arm`` values:
    16 for a Beta family of 256 bank rows, ~135 for the shared linear family."""
    return max(ADD_SLICE, ADD_VALUES // (ADD_ID_VALUES + values_per_arm))


class CatalogueChanges:
    """Adds arms to the engine that ``engine()`` returns, holding ``lock`` only briefly.

    The owner serialises catalogue changes (and engine swaps) with :attr:`mutex`, reports
    every learned arm with :meth:`learned` (needed while a growth is under way), and reads
    the longest lock hold from :attr:`longest_hold` (wall seconds, CPU seconds).
    """

    def __init__(self, lock: Any, engine: Callable[[], Engine]) -> None:
        self.lock = lock
        self.mutex = threading.Lock()
        self.longest_hold = (0.0, 0.0)
        self._engine = engine
        self._touched: list[int] | None = None

    def learned(self, arm: int) -> None:
        """Note an arm whose statistics changed (re-copied if a growth is under way)."""
        if self._touched is not None:
            self._touched.append(arm)

    def learned_many(self, arms: np.ndarray) -> None:
        """:meth:`learned` for many arms."""
        if self._touched is not None:
            self._touched.extend(arms.tolist())

    @contextmanager
    def held(self) -> Iterator[None]:
        """The serving lock, with the hold's duration recorded."""
        with self.lock:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                yield
            finally:
                w, c = self.longest_hold
                self.longest_hold = (
                    max(w, time.perf_counter() - wall),
                    max(c, time.thread_time() - cpu),
                )

    def add(self, ids: Sequence[str], group: str, features: Any = None) -> np.ndarray:
        """Register ``ids`` in ``group``; all ids and features are checked before any is
        added, so no slice can fail halfway. Returns the arms' indices."""
        ids = as_id_list(ids, "ids")
        feats = None if features is None else as_float_array(features, "features", (-1, -1))
        with self.mutex:  # only catalogue changes write the registry
            engine = self._engine()
            engine.registry.check_new(ids, group)
            if feats is not None and (feats.ndim != 2 or feats.shape[0] != len(ids)):
                raise InvalidInputError(
                    f"features has shape {feats.shape}, expected ({len(ids)}, n_arm_features)"
                )
            is_fresh = ~engine.registry.known(ids)
            fresh = int(is_fresh.sum())
            engine.policy.check_arm_features(fresh, None if feats is None else feats[is_fresh])
            # built off the lock: only catalogue changes (under ``mutex``) write the registry
            grown = engine.registry.grown_for(engine.registry.n_arms + fresh)
            if grown is not None:
                with self.held():
                    engine.registry.install(grown)
            capacity = engine.registry.capacity
            if capacity > engine.policy.state.capacity:
                self._grow(engine, capacity)
            out = []
            size = add_slice(engine.policy.state.values_per_arm())
            for lo in range(0, len(ids), size):
                fpart = None if feats is None else feats[lo : lo + size][is_fresh[lo : lo + size]]
                with self.held():
                    out.append(engine.add_arms(ids[lo : lo + size], group, fpart))
            return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def retire(self, ids: Sequence[str]) -> np.ndarray:
        """Stop serving ``ids`` from the next decision on (learned state is kept)."""
        with self.mutex, self.held():
            return self._engine().retire_arms(ids)

    def _grow(self, engine: Engine, capacity: int) -> None:
        state = engine.policy.state
        with self.lock:
            rows = state.capacity
            self._touched = []
        grown = state.grown_arrays(capacity)
        # Nobody sees ``grown`` yet: fill it whole off the lock (fresh rows get their initial
        # values, and every page is touched here rather than under the lock).
        for lo in range(0, capacity, GROW_SLICE):
            state.fill_rows(grown, lo, min(capacity, lo + GROW_SLICE))
        try:
            for lo in range(0, rows, GROW_SLICE):
                with self.held():
                    state.copy_rows(grown, lo, min(rows, lo + GROW_SLICE))
            first_seen = engine.contracts.grown(capacity)
            with self.held():
                assert self._touched is not None
                state.copy_arms(grown, np.unique(np.array(self._touched, dtype=np.int64)))
                replaced = state.install(grown, capacity)
                replaced.append(engine.contracts.install_grown(first_seen))
            del replaced  # freed off the lock
        finally:
            with self.lock:
                self._touched = None
