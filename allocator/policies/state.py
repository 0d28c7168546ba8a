"""Declared model state: every array a family owns, with the roles that drive generic code.

A family lists its arrays once as :class:`Field` declarations. Snapshot, restore, growth of
the arm catalogue, fleet deltas and merges, forgetting and hot-reload adoption are written
once here, over those declarations: adding an array to a family is one line, and no
generic operation can forget it. The arrays stay plain attributes of a :class:`ModelState`
(flat C-contiguous numpy arrays), so the hot path passes them to kernels directly.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from allocator.errors import InvalidInputError, SnapshotError


class Role(enum.Flag):
    """What an array is, which decides what each generic operation does with it."""

    NONE = 0
    #: axis 0 is the arm index: grown with the catalogue, sliced to the registered arms
    PER_ARM = enum.auto()
    #: evidence from observations: carried into a reconfigured policy
    LEARNED = enum.auto()
    #: a sum over observations: exported in fleet deltas and added up by merges
    ADDITIVE = enum.auto()
    #: decays by ``gamma`` per model-clock tick: lazily since the arm's ``t_last`` when per
    #: arm (see :meth:`ModelState.settle`), at every update otherwise
    DECAYS = enum.auto()
    #: per-arm prior, set when an arm joins; carried into a reconfigured policy
    PRIOR = enum.auto()
    #: recomputed from the rest by a refresh; saved anyway so a restore decides identically
    CACHE = enum.auto()
    #: working buffers: never saved, never merged
    SCRATCH = enum.auto()


@dataclass(frozen=True)
class Field:
    """One array: name, dtype, roles, and its dimensions after the arm axis (if per arm).

    ``dims`` entries are ints or names of sizes the family resolves (``"d"``, ``"rows"``).
    ``fill`` is the value of fresh entries (new arms, new buffers). ``values`` says what a
    restored array may hold beyond finiteness: ``"arm"`` (an arm index, or -1) or
    ``"tick"`` (a model-clock tick, 0 … clock) — kernels index with them — or ``"count"``
    (non-negative).
    """

    name: str
    dtype: Any
    roles: Role = Role.NONE
    dims: tuple[int | str, ...] = ()
    fill: float = 0
    values: str = ""

    def has(self, role: Role) -> bool:
        return bool(self.roles & role)

    def shape(self, sizes: Mapping[str, int], capacity: int) -> tuple[int, ...]:
        tail = tuple(d if isinstance(d, int) else int(sizes[d]) for d in self.dims)
        return (capacity, *tail) if self.has(Role.PER_ARM) else tail


#: Arrays every family has: the model clock (one tick per observation), the decision stream
#: (counter-based RNG words), the raw observation count per arm, the per-arm "posterior
#: changed" flags, and counters of refreshes, updates since the last refresh and arms
#: that have state; and the kernels' per-arm scratch (all -1 between calls).
COMMON_FIELDS = (
    Field("clock", np.int64, Role.LEARNED, (1,), values="count"),
    Field("stream", np.uint64, Role.NONE, (2,)),
    Field("n_obs", np.int64, Role.PER_ARM | Role.LEARNED | Role.ADDITIVE, values="count"),
    Field("dirty", np.bool_, Role.PER_ARM | Role.CACHE),
    Field("version", np.int64, Role.NONE, (1,), values="count"),
    Field("pending", np.int64, Role.NONE, (1,), values="count"),
    Field("n_synced", np.int64, Role.NONE, (1,), values="count"),
    Field("pos_of_arm", np.int64, Role.PER_ARM | Role.SCRATCH, fill=-1),
)


def finite(value: np.ndarray) -> bool:
    """Whether a non-empty float array holds no NaN or inf, without an array-sized mask:
    its min and max are finite exactly then (both propagate NaN)."""
    return bool(np.isfinite(value.min()) and np.isfinite(value.max()))


class ModelState:
    """The arrays of one model, as attributes named by its fields."""

    def __init__(self, fields: tuple[Field, ...], sizes: Mapping[str, int], capacity: int):
        self.fields = fields
        self.names = frozenset(f.name for f in fields)
        self.sizes = dict(sizes)
        self.capacity = int(capacity)
        self._by_role: dict[Role, tuple[Field, ...]] = {}
        #: bumped whenever arrays are replaced (callers holding them rebuild, see
        #: ``allocator.policies.bound``)
        self.generation = 0
        for f in fields:  # zeros come from the allocator untouched: a page costs when written
            shape = f.shape(sizes, capacity)
            fresh = np.zeros(shape, f.dtype) if f.fill == 0 else np.full(shape, f.fill, f.dtype)
            setattr(self, f.name, fresh)

    def __getattr__(self, name: str) -> np.ndarray:  # typing only: fields are attributes
        raise AttributeError(name)

    def select(self, role: Role) -> tuple[Field, ...]:
        """The fields having any of ``role``'s flags (cached: catalogue changes call it)."""
        out = self._by_role.get(role)
        if out is None:
            out = self._by_role[role] = tuple(f for f in self.fields if f.has(role))
        return out

    # ------------------------------------------------------------------ catalogue
    def grow(self, capacity: int) -> None:
        """Make room for ``capacity`` arms; existing entries are kept."""
        if capacity <= self.capacity:
            return
        grown = self.grown_arrays(capacity)
        self.fill_rows(grown, self.capacity, capacity)
        self.copy_rows(grown, 0, self.capacity)
        self.install(grown, capacity)

    def values_per_arm(self) -> int:
        """How many values (floats, counts, flags) one arm's state holds: what adding an
        arm initialises (its bank rows included)."""
        return sum(math.prod(f.shape(self.sizes, 1)[1:]) for f in self.select(Role.PER_ARM))

    def grown_arrays(self, capacity: int) -> dict[str, np.ndarray]:
        """Uninitialised per-arm arrays for ``capacity`` arms.

        With :meth:`fill_rows`, :meth:`copy_rows` and :meth:`install` a caller can grow a
        large catalogue in slices, serving decisions between them: new rows are filled
        before anyone can see them, old rows copied under the caller's lock.
        """
        return {
            f.name: np.empty(f.shape(self.sizes, capacity), dtype=f.dtype)
            for f in self.select(Role.PER_ARM)
        }

    def fill_rows(self, grown: Mapping[str, np.ndarray], lo: int, hi: int) -> None:
        """Set arms ``[lo, hi)`` of ``grown`` to each field's fresh value."""
        for f in self.select(Role.PER_ARM):
            grown[f.name][lo:hi] = f.fill

    def copy_rows(self, grown: Mapping[str, np.ndarray], lo: int, hi: int) -> None:
        """Copy arms ``[lo, hi)`` of every per-arm array into ``grown``."""
        for name, target in grown.items():
            target[lo:hi] = getattr(self, name)[lo:hi]

    def copy_arms(self, grown: Mapping[str, np.ndarray], arms: np.ndarray) -> None:
        """Copy the given arms' rows of every per-arm array into ``grown``."""
        for name, target in grown.items():
            target[arms] = getattr(self, name)[arms]

    def install(self, grown: Mapping[str, np.ndarray], capacity: int) -> list[np.ndarray]:
        """Replace the per-arm arrays by ``grown`` (all rows copied) of ``capacity`` arms.

        Returns the replaced arrays, so a caller holding a lock can let them be freed after
        releasing it (unmapping a large array is not free).
        """
        old = [getattr(self, name) for name in grown]
        for name, value in grown.items():
            setattr(self, name, value)
        self.capacity = capacity
        self.generation += 1
        return old

    # ------------------------------------------------------------------- snapshot
    def snapshot(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Every saved array (everything but scratch): copies, or with ``copy=False`` the
        live arrays themselves (for a caller that writes them out before anything else can
        change them: a save under the allocator's lock)."""
        return {
            f.name: getattr(self, f.name).copy() if copy else getattr(self, f.name)
            for f in self.fields
            if not f.has(Role.SCRATCH)
        }

    def restore(self, arrays: Mapping[str, np.ndarray], copy: bool = True) -> None:
        """Load :meth:`snapshot` output after checking every array; all or nothing.

        Names, dtypes, shapes (one arm capacity for every per-arm array, the family's
        sizes for the rest) and finiteness are checked before anything is assigned. With
        ``copy=False`` the state adopts the given arrays (C-contiguous ones are not copied):
        for arrays nobody else holds, such as those just read from a snapshot file.
        """
        saved = [f for f in self.fields if not f.has(Role.SCRATCH)]
        per_arm = [
            arrays[f.name].shape[0] for f in saved if f.has(Role.PER_ARM) and f.name in arrays
        ]
        capacity = per_arm[0] if per_arm else self.capacity
        checked: dict[str, np.ndarray] = {}
        for f in saved:
            value = arrays.get(f.name)
            if value is None:
                raise SnapshotError(f"state array {f.name!r} is missing")
            want = f.shape(self.sizes, capacity)
            if f.has(Role.CACHE) and value.dtype == np.float64 and f.dtype == np.float32:
                with np.errstate(over="ignore"):  # beyond float32 is inf: refused below
                    value = value.astype(np.float32)  # a bank saved in double precision
            if value.dtype != np.dtype(f.dtype) or value.shape != want:
                raise SnapshotError(
                    f"state array {f.name!r} has dtype {value.dtype} and shape {value.shape}, "
                    f"expected {np.dtype(f.dtype)} and {want}"
                )
            if value.dtype.kind == "f" and value.size and not finite(value):
                raise SnapshotError(f"state array {f.name!r} holds NaN or inf")
            checked[f.name] = np.array(value, copy=True if copy else None, order="C")
        clock = int(checked["clock"][0]) if "clock" in checked else 0
        for f in saved:
            value = checked[f.name]
            lo, hi = {"arm": (-1, capacity - 1), "tick": (0, clock), "count": (0, None)}.get(
                f.values, (None, None)
            )
            if value.size and (
                (lo is not None and value.min() < lo) or (hi is not None and value.max() > hi)
            ):
                raise SnapshotError(
                    f"state array {f.name!r} holds values outside [{lo}, {hi}] ({f.values})"
                )
        for f in self.select(Role.SCRATCH):
            checked[f.name] = np.full(f.shape(self.sizes, capacity), f.fill, dtype=f.dtype)
        for name, value in checked.items():
            setattr(self, name, value)
        self.capacity = capacity
        self.generation += 1

    # -------------------------------------------------------------- forgetting
    def settle(self, gamma: float, n_arms: int) -> None:
        """Apply pending lazy forgetting to arms ``[0, n_arms)`` so that stored decaying
        statistics are the effective ones at the current clock."""
        decaying = [f for f in self.select(Role.DECAYS) if f.has(Role.PER_ARM)]
        if gamma == 1.0 or not decaying:
            return
        t_last = self.t_last[:n_arms]
        w = gamma ** (self.clock[0] - t_last).astype(np.float64)
        for f in decaying:
            arr = getattr(self, f.name)[:n_arms]
            arr *= w.reshape((n_arms,) + (1,) * (arr.ndim - 1))
        t_last[:] = self.clock[0]

    # ---------------------------------------------------------------- fleet deltas
    def additive(self, n_arms: int) -> dict[str, np.ndarray]:
        """Copies of the additive statistics (per-arm ones for the registered arms)."""
        return {
            f.name: getattr(self, f.name)[:n_arms].copy()
            if f.has(Role.PER_ARM)
            else getattr(self, f.name).copy()
            for f in self.select(Role.ADDITIVE)
        }

    def check_delta(
        self, delta: Mapping[str, Any], n_arms: int, source: str = "this model"
    ) -> dict[str, np.ndarray]:
        """A replica's delta as validated arrays, or a typed error naming the array."""
        if not isinstance(delta, Mapping):
            raise InvalidInputError(
                f"delta must be a mapping of arrays, got {type(delta).__name__}"
            )
        fields = self.select(Role.ADDITIVE)
        missing = [f.name for f in fields if f.name not in delta]
        if missing:
            raise InvalidInputError(f"delta lacks {missing}: not from {source}")
        extra = sorted(set(delta) - {f.name for f in fields})
        if extra:
            raise InvalidInputError(f"delta has unknown arrays {extra}: not from {source}")
        n_obs = np.asarray(delta["n_obs"])
        if n_obs.ndim != 1 or n_obs.shape[0] > n_arms:
            raise InvalidInputError(
                f"delta covers {n_obs.shape[0] if n_obs.ndim else 0} arms, "
                f"this policy knows {n_arms}"
            )
        k = n_obs.shape[0]
        out = {}
        for f in fields:
            part = np.asarray(delta[f.name])
            want = (
                (k, *f.shape(self.sizes, 0)[1:]) if f.has(Role.PER_ARM) else f.shape(self.sizes, 0)
            )
            if part.shape != want:
                raise InvalidInputError(
                    f"delta[{f.name!r}] has shape {part.shape}, expected {want}"
                )
            if part.dtype.kind not in "iuf" or (
                part.dtype.kind == "f" and not np.isfinite(part).all()
            ):
                raise InvalidInputError(f"delta[{f.name!r}] must be finite numbers")
            if np.dtype(f.dtype).kind == "i" and part.size:
                # counts: whole numbers within int64, never truncated or wrapped
                whole = part.dtype.kind != "f" or bool((part == np.floor(part)).all())
                if not whole or float(part.max()) >= 2.0**62 or float(part.min()) <= -(2.0**62):
                    raise InvalidInputError(
                        f"delta[{f.name!r}] must hold whole numbers below 2**62 in magnitude"
                    )
            out[f.name] = part.astype(f.dtype, copy=False)
        if (out["n_obs"] < 0).any():
            raise InvalidInputError("delta['n_obs'] has negative counts")
        return out

    def touched_rows(self, delta: Mapping[str, np.ndarray]) -> np.ndarray:
        """The arms a checked delta changes: a count or any per-arm statistic non-zero
        (with forgetting a delta may move an arm's statistics without new observations)."""
        k = int(delta["n_obs"].shape[0])
        touched = delta["n_obs"] != 0
        for f in self.select(Role.ADDITIVE):
            if f.has(Role.PER_ARM):
                touched |= (delta[f.name].reshape(k, -1) != 0).any(axis=1)
        return touched

    def merged(
        self, delta: Mapping[str, np.ndarray], gamma: float, limit: float
    ) -> dict[str, np.ndarray]:
        """The additive statistics with a checked ``delta`` folded in, as new arrays (per-arm
        ones for the rows the delta covers, brought to the current clock); nothing changes.

        The result must be a statistic real observations could produce: finite, within
        ``limit`` in magnitude, and ``"count"`` fields non-negative (rounding below zero,
        at most 1e-9 relative, is set to 0). Otherwise a typed error names the array.
        """
        k = int(delta["n_obs"].shape[0])
        w = None
        if gamma != 1.0 and "t_last" in self.names:
            w = gamma ** (self.clock[0] - self.t_last[:k]).astype(np.float64)
        out: dict[str, np.ndarray] = {}
        for f in self.select(Role.ADDITIVE):
            current = getattr(self, f.name)
            if f.has(Role.PER_ARM):
                current = current[:k]
                if w is not None and f.has(Role.DECAYS):
                    current = current * w.reshape((k,) + (1,) * (current.ndim - 1))
            with np.errstate(over="ignore", invalid="ignore"):
                total = current + delta[f.name]
            if total.dtype.kind == "f" and not np.abs(total).max(initial=0.0) <= limit:
                raise InvalidInputError(
                    f"delta[{f.name!r}] would leave statistics beyond {limit:g} in magnitude: "
                    "more than the observations it claims can add within the input bounds"
                )
            if f.values == "count" and total.size and total.min() < 0:
                slack = 1e-9 * (1.0 + np.abs(current) + np.abs(delta[f.name]))
                if (total < -slack).any():
                    raise InvalidInputError(
                        f"delta[{f.name!r}] would make a non-negative statistic negative"
                    )
                total = np.maximum(total, 0).astype(total.dtype, copy=False)
            out[f.name] = total
        return out

    def put(self, merged: Mapping[str, np.ndarray]) -> int:
        """Assign :meth:`merged` output; returns the number of arms it covers."""
        k = int(merged["n_obs"].shape[0])
        for f in self.select(Role.ADDITIVE):
            target = getattr(self, f.name)
            if f.has(Role.PER_ARM):
                target[:k] = merged[f.name]
            else:
                target[...] = merged[f.name]
        return k

    # ------------------------------------------------------------- hot reload
    def adopt(self, other: ModelState, n_arms: int) -> None:
        """Take ``other``'s evidence and priors (learned and prior arrays) for its arms."""
        for f in self.fields:
            if not f.has(Role.LEARNED | Role.PRIOR):
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine.shape[1:] != theirs.shape[1:] and f.has(Role.PER_ARM):
                raise InvalidInputError(f"cannot carry {f.name!r}: model dimensions changed")
            if f.has(Role.PER_ARM):
                n = min(n_arms, theirs.shape[0], mine.shape[0])
                mine[:n] = theirs[:n]
            elif mine.shape != theirs.shape:
                raise InvalidInputError(f"cannot carry {f.name!r}: model dimensions changed")
            else:
                mine[...] = theirs
