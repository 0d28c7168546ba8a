"""Stable string arm ids ↔ dense indices, with groups and an active mask.

Indices are never reused: retiring an arm only clears its ``active`` flag, so every other
arm's learned state (indexed densely by the policies) is undisturbed. Arrays grow by
doubling, so adding arms one at a time stays amortised O(1) up to millions of arms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from allocator.errors import InvalidInputError, SnapshotError, UnknownArmError, brief
from allocator.inputs import as_id_list

MINI_SHOP = "mini_shop"


class ArmRegistry:
    """Arm ids, their groups, and which arms may currently be chosen."""

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise InvalidInputError(f"capacity must be >= 1, got {capacity}")
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._groups: list[str] = []
        self._group_code: dict[str, int] = {}
        self.active = np.zeros(capacity, dtype=np.bool_)
        self.arm_group = np.full(capacity, -1, dtype=np.int64)
        self.owner: object | None = None

    def claim(self, owner: object) -> None:
        """Reserve catalogue changes for ``owner`` (the policy whose per-arm state follows
        the registry); others get a clear error instead of arms without state."""
        if self.owner is not None and self.owner is not owner:
            raise InvalidInputError("this registry already belongs to another policy")
        self.owner = owner

    def _check_owner(self, by: object | None) -> None:
        if self.owner is not None and by is not self.owner:
            raise InvalidInputError(
                "this registry belongs to an engine: add or retire arms through "
                "Engine.add_arms / retire_arms (or Allocator.add_arms / retire_arms), which "
                "keep the model's per-arm state in step"
            )

    @classmethod
    def build(cls, ids: Sequence[str], groups: Sequence[str]) -> ArmRegistry:
        """A registry of ``ids`` in ``groups`` (aligned), indexed in the given order."""
        if len(ids) != len(groups):
            raise InvalidInputError(f"{len(ids)} arm ids but {len(groups)} groups")
        registry = cls(capacity=max(16, len(ids)))
        start = 0
        for i in range(1, len(ids) + 1):  # consecutive runs of one group in one call
            if i == len(ids) or groups[i] != groups[start]:
                registry.add(list(ids[start:i]), groups[start])
                start = i
        return registry

    @property
    def n_arms(self) -> int:
        """Number of indices handed out (active or retired)."""
        return len(self._ids)

    @property
    def capacity(self) -> int:
        return int(self.active.shape[0])

    @property
    def groups(self) -> list[str]:
        """Group names, position = group code."""
        return list(self._groups)

    def group_code(self, group: str) -> int:
        try:
            return self._group_code[group]
        except KeyError:
            raise UnknownArmError(f"unknown group {group!r}; known: {self._groups}") from None

    def knows(self, arm_id: str) -> bool:
        """True when ``arm_id`` was ever registered (active or retired)."""
        return arm_id in self._index

    def index_of(self, arm_id: str) -> int | None:
        """The index of ``arm_id``, or None when it was never registered."""
        return self._index.get(arm_id)

    def check_new(self, ids: Sequence[str], group: str) -> None:
        """Raise if ``ids`` cannot be added to ``group`` (nothing changes either way)."""
        if not group or not isinstance(group, str):
            raise InvalidInputError(f"group must be a non-empty string, got {brief(group)}")
        ids = as_id_list(ids, "ids")
        if len(set(ids)) != len(ids):
            raise InvalidInputError("ids contains duplicates")
        for arm_id in ids:
            known = self._index.get(arm_id)
            if known is not None:
                if self.active[known]:
                    raise InvalidInputError(f"arm {arm_id!r} is already registered")
                if self._groups[self.arm_group[known]] != group:
                    raise InvalidInputError(
                        f"arm {arm_id!r} was registered in group "
                        f"{self._groups[self.arm_group[known]]!r}, not {group!r}"
                    )

    def add(self, ids: Sequence[str] | str, group: str, by: object | None = None) -> np.ndarray:
        """Register ``ids`` in ``group``; return their indices.

        Re-adding a retired id reactivates it with its old index (and learned state);
        re-adding an active id, or an id already in another group, is an error. A claimed
        registry (see :meth:`claim`) only takes changes ``by`` its owner.
        """
        self._check_owner(by)
        ids = as_id_list(ids, "ids")
        self.check_new(ids, group)
        code = self._group_code.get(group)
        if code is None:
            code = len(self._groups)
            self._groups.append(group)
            self._group_code[group] = code
        fresh = [a for a in ids if a not in self._index]
        self.reserve(self.n_arms + len(fresh))
        out = np.empty(len(ids), dtype=np.int64)
        for i, arm_id in enumerate(ids):
            idx = self._index.get(arm_id)
            if idx is None:
                idx = len(self._ids)
                self._index[arm_id] = idx
                self._ids.append(arm_id)
            out[i] = idx
        self.arm_group[out] = code
        self.active[out] = True
        return out

    def retire(self, ids: Iterable[str], by: object | None = None) -> np.ndarray:
        """Make arms ineligible; their index and learned state are kept."""
        self._check_owner(by)
        idx = self.lookup(as_id_list(ids, "ids"), allow_retired=True)
        self.active[idx] = False
        return idx

    def lookup(self, ids: Sequence[str], allow_retired: bool = False) -> np.ndarray:
        """Indices of ``ids``; unknown (or, unless allowed, retired) ids raise."""
        out = np.empty(len(ids), dtype=np.int64)
        for i, arm_id in enumerate(ids):
            idx = self._index.get(arm_id)
            if idx is None:
                raise UnknownArmError(f"unknown arm id {arm_id!r} at position {i}")
            if not allow_retired and not self.active[idx]:
                raise UnknownArmError(f"arm {arm_id!r} at position {i} is retired")
            out[i] = idx
        return out

    def arm_id(self, index: int) -> str:
        if not 0 <= index < len(self._ids):
            raise UnknownArmError(f"arm index {index} out of range [0, {len(self._ids)})")
        return self._ids[index]

    def group_of(self, index: int) -> str:
        return self._groups[int(self.arm_group[index])] if 0 <= index < self.n_arms else ""

    def members(self, group: str) -> np.ndarray:
        """Indices of the active arms of ``group``."""
        code = self.group_code(group)
        n = self.n_arms
        return np.flatnonzero((self.arm_group[:n] == code) & self.active[:n])

    def reserve(self, n: int) -> None:
        """Make room for ``n`` arms (doubling, so one-at-a-time adds stay amortised O(1))."""
        cap = self.capacity
        if n <= cap:
            return
        while cap < n:
            cap *= 2
        active = np.zeros(cap, dtype=np.bool_)
        active[: self.active.shape[0]] = self.active
        group = np.full(cap, -1, dtype=np.int64)
        group[: self.arm_group.shape[0]] = self.arm_group
        self.active, self.arm_group = active, group

    def all_ids(self) -> list[str]:
        """Every id ever registered, by index."""
        return list(self._ids)

    def members_all(self) -> list[str]:
        """Ids of the active arms."""
        return [self._ids[i] for i in np.flatnonzero(self.active[: self.n_arms])]

    def copy(self) -> ArmRegistry:
        """An independent copy (used to stage a reconfiguration before swapping it in)."""
        out = ArmRegistry(capacity=self.capacity)
        out._index = dict(self._index)
        out._ids = list(self._ids)
        out._groups = list(self._groups)
        out._group_code = dict(self._group_code)
        out.active = self.active.copy()
        out.arm_group = self.arm_group.copy()
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "registry.ids": np.array(self._ids, dtype=str),
            "registry.groups": np.array(self._groups, dtype=str),
            "registry.arm_group": self.arm_group.copy(),
            "registry.active": self.active.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ArmRegistry:
        """Rebuild from :meth:`to_arrays` output, checking it first (untrusted files):
        ids and groups unique non-empty strings, one capacity for both flag arrays, group
        codes in range for registered arms, no active slot beyond them."""
        try:
            ids_arr, groups_arr = arrays["registry.ids"], arrays["registry.groups"]
            active, arm_group = arrays["registry.active"], arrays["registry.arm_group"]
        except KeyError as err:
            raise SnapshotError(f"registry array {err} is missing") from None
        if ids_arr.dtype.kind != "U" or groups_arr.dtype.kind != "U" or ids_arr.ndim != 1:
            raise SnapshotError("registry ids and groups must be 1-d string arrays")
        if active.dtype != np.bool_ or arm_group.dtype != np.int64:
            raise SnapshotError("registry.active must be bool and registry.arm_group int64")
        if active.ndim != 1 or active.shape != arm_group.shape or active.shape[0] < 1:
            raise SnapshotError(
                f"registry arrays have shapes {active.shape} and {arm_group.shape}: expected "
                "one capacity >= 1"
            )
        ids, groups = ids_arr.tolist(), groups_arr.tolist()
        n, cap = len(ids), int(active.shape[0])
        if n > cap or len(set(ids)) != n or not all(ids) or len(set(groups)) != len(groups):
            raise SnapshotError(
                f"registry has {n} ids for capacity {cap}, or repeated or empty ids or groups"
            )
        codes = arm_group[:n]
        if n and (codes.min() < 0 or codes.max() >= len(groups)):
            raise SnapshotError("registry.arm_group holds a group code out of range")
        if active[n:].any():
            raise SnapshotError("registry.active marks a slot with no arm")
        out = cls(capacity=cap)
        out._ids = ids
        out._index = {arm_id: i for i, arm_id in enumerate(ids)}
        out._groups = groups
        out._group_code = {g: i for i, g in enumerate(groups)}
        out.active = active.astype(np.bool_, copy=True)
        out.arm_group = arm_group.astype(np.int64, copy=True)
        return out
