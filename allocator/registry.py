"""Stable string arm ids ↔ dense indices, with groups and an active mask.

Indices are never reused: retiring an arm only clears its ``active`` flag, so every other
arm's learned state (indexed densely by the policies) is undisturbed. Arrays grow by
doubling, so adding arms one at a time stays amortised O(1) up to millions of arms.

Ids are kept as flat arrays (codepoints end to end, offsets, and an open-addressing hash
table: :mod:`allocator.kernels.idtable`), not as a dict of Python strings: a request's
candidate ids are resolved in one compiled call, whether they come as a list of str
(joined and encoded once), a numpy string array (read in place) or :class:`IntIds`
(integer external ids, read as their decimal spelling), and 10^6 ids cost ~40 MB, not ~100.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from allocator.errors import InvalidInputError, SnapshotError, UnknownArmError, brief
from allocator.inputs import as_id_list, is_utf8
from allocator.kernels import idtable as kid
from allocator.kernels.entry import entry_point

MINI_SHOP = "mini_shop"
_WIDE = "utf-32-le"


class IntIds:
    """Candidate arm ids given as integers: the value ``v`` names the arm whose id is
    ``str(v)`` (a catalogue with integer external ids). Plain integer arrays stay arm
    indices; wrapping says which is meant."""

    __slots__ = ("values",)

    def __init__(self, values: Any) -> None:
        arr = np.asarray(values)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InvalidInputError(
                f"IntIds takes a 1-d integer array, got {arr.dtype} {arr.shape}"
            )
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise InvalidInputError("IntIds values must fit in int64")
        self.values = np.ascontiguousarray(arr, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.values.shape[0])


def _table_size(capacity: int) -> int:
    """Hash slots for ``capacity`` ids: a power of two, at most half full."""
    return 1 << max(5, (2 * capacity - 1).bit_length())


def _encode(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` as uint32 codepoints end to end, with their offsets (n+1,)."""
    chars = np.frombuffer("".join(ids).encode(_WIDE, "surrogatepass"), dtype=np.uint32)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, ids), np.int64, len(ids)), out=offsets[1:])
    return chars, offsets


def codepoint_rows(ids: np.ndarray) -> np.ndarray:
    """The 1-d numpy string array ``ids`` as (n, w) uint32 codepoints, zero-padded, in
    native byte order (a big-endian array is converted, not misread); (0, 1) if empty."""
    native = np.ascontiguousarray(ids, dtype=ids.dtype.newbyteorder("="))
    return native.view(np.uint32).reshape(len(ids), ids.itemsize // 4)


class ArmRegistry:
    """Arm ids, their groups, and which arms may currently be chosen."""

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise InvalidInputError(f"capacity must be >= 1, got {capacity}")
        self._n = 0
        self._chars: np.ndarray = np.zeros(8 * capacity, dtype=np.uint8)  # uint32 if needed
        self._offsets = np.zeros(capacity + 1, dtype=np.int64)
        self._table = np.full(_table_size(capacity), -1, dtype=np.int64)
        self._groups: list[str] = []
        self._group_code: dict[str, int] = {}
        self.active = np.zeros(capacity, dtype=np.bool_)
        self.arm_group = np.full(capacity, -1, dtype=np.int64)
        self.owner: object | None = None
        #: bumped when ``active`` / ``arm_group`` are replaced (see ``policies.bound``)
        self.generation = 0
        self._entries: dict[tuple[Any, str], Any] = {}

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
        return self._n

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

    # ------------------------------------------------------------------ lookups
    def _table_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self._table, self._chars, self._offsets, self.active

    def knows(self, arm_id: str) -> bool:
        """True when ``arm_id`` was ever registered (active or retired)."""
        return self.index_of(arm_id) is not None

    def known(self, ids: Sequence[str]) -> np.ndarray:
        """Whether each of ``ids`` was ever registered (active or retired): one compiled
        lookup for the list, where :meth:`knows` per id costs a call each."""
        return self._resolve(as_id_list(ids, "ids"), kid.ANY_OR_NEW) >= 0

    def index_of(self, arm_id: str) -> int | None:
        """The index of ``arm_id``, or None when it was never registered."""
        if not isinstance(arm_id, str):
            return None
        out = np.empty(1, dtype=np.int64)
        q = np.frombuffer(arm_id.encode(_WIDE, "surrogatepass"), dtype=np.uint32)
        code, _ = kid.lookup_joined(*self._table_args(), kid.ANY_OR_NEW, q, out)
        return None if code != kid.FOUND or out[0] < 0 else int(out[0])

    def lookup(self, ids: Any, allow_retired: bool = False) -> np.ndarray:
        """Indices of ``ids`` (a list or tuple of str, a 1-d numpy string array, or
        :class:`IntIds`) in one compiled call; unknown (or, unless allowed, retired) ids
        raise, naming the first such id and its position."""
        return self._resolve(ids, kid.ANY if allow_retired else kid.ACTIVE)

    def _kernel(self, kernel: Any, args: tuple[Any, ...]) -> Any:
        """The bound entry point of a lookup ``kernel`` (:mod:`allocator.kernels.entry`):
        its argument types are fixed by construction but for the codepoint width."""
        key = (kernel, self._chars.dtype.char)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = entry_point(kernel, args)
        return entry

    def _resolve(self, ids: Any, mode: int) -> np.ndarray:
        args = self._table_args()
        if isinstance(ids, IntIds):
            out = np.empty(len(ids), dtype=np.int64)
            code, pos = kid.lookup_ints(*args, mode, ids.values, out)
            if code != kid.FOUND:
                self._raise(code, str(ids.values[pos]), pos)
            return out
        if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
            if ids.ndim != 1:
                raise InvalidInputError(f"candidates must be 1-d, got shape {ids.shape}")
            out = np.empty(ids.shape[0], dtype=np.int64)
            code, pos = kid.lookup_rows(*args, mode, codepoint_rows(ids), out)
            if code != kid.FOUND:
                self._raise(code, str(ids[pos]), pos)
            return out
        ids = ids if isinstance(ids, (list, tuple)) else list(ids)
        out = np.empty(len(ids), dtype=np.int64)
        joined = self.joined_ids(ids)
        if joined is None:
            return self._resolve_each(ids, mode)
        call = (*args, mode, joined, out)
        code, pos = self._kernel(kid.lookup_joined, call)(*call)
        if code == kid.MISSPLIT:  # an id holds a NUL (so is unknown): find which
            return self._resolve_each(ids, mode)
        if code != kid.FOUND:
            self.raise_lookup(code, pos, ids)
        return out

    def joined_ids(self, ids: list[Any] | tuple[Any, ...]) -> np.ndarray | None:
        """``ids`` joined by NUL as the id table's codepoints (joined and encoded at C
        speed, split in a kernel: see :func:`allocator.kernels.idtable.lookup_joined`), or
        None when they cannot be (a non-str, or a codepoint no id has)."""
        chars = self._chars
        try:
            joined = "\x00".join(ids).encode(
                "latin-1" if chars.itemsize == 1 else _WIDE, "surrogatepass"
            )
        except (TypeError, UnicodeEncodeError):
            return None
        return np.frombuffer(joined, chars.dtype)

    def id_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The id table's arrays (``table, chars, offsets`` of :mod:`allocator.kernels.idtable`)
        for a compiled caller; replaced when arms are added (``n_arms`` changes)."""
        return self._table, self._chars, self._offsets

    @staticmethod
    def raise_lookup(code: int, pos: int, ids: Sequence[Any]) -> NoReturn:
        """Raise the error of a failed lookup of ``ids`` (``code``, ``pos``: the UNKNOWN or
        RETIRED status and position a lookup kernel returned) exactly as :meth:`lookup`."""
        ArmRegistry._raise(code, ids[pos], pos)

    @staticmethod
    def _raise(code: int, arm_id: Any, pos: int) -> NoReturn:
        if code == kid.RETIRED:
            raise UnknownArmError(f"arm {brief(arm_id)} at position {pos} is retired")
        raise UnknownArmError(f"unknown arm id {brief(arm_id)} at position {pos}")

    def _resolve_each(self, ids: Sequence[Any], mode: int) -> np.ndarray:
        """One id at a time: the exact error for inputs the joined form cannot carry."""
        out = np.empty(len(ids), dtype=np.int64)
        for i, arm_id in enumerate(ids):
            idx = self.index_of(arm_id)
            if idx is None and mode != kid.ANY_OR_NEW:
                self._raise(kid.UNKNOWN, arm_id, i)
            if mode == kid.ACTIVE and not self.active[idx]:
                self._raise(kid.RETIRED, arm_id, i)
            out[i] = -1 if idx is None else idx
        return out

    def arm_id(self, index: int) -> str:
        if not 0 <= index < self._n:
            raise UnknownArmError(f"arm index {index} out of range [0, {self._n})")
        part = self._chars[self._offsets[index] : self._offsets[index + 1]]
        if part.dtype == np.uint8:
            return part.tobytes().decode("latin-1")
        return part.tobytes().decode(_WIDE, "surrogatepass")

    def ids_of(self, indices: np.ndarray) -> np.ndarray:
        """The ids of arm ``indices`` (registered, int64) as a numpy string array."""
        idx = np.ascontiguousarray(indices, dtype=np.int64)
        width = max(1, int(kid.longest(self._offsets, idx)))
        rows = np.empty((idx.shape[0], width), dtype=np.uint32)
        kid.gather(self._chars, self._offsets, idx, rows)
        return rows.view(f"<U{width}").reshape(idx.shape[0])

    def group_of(self, index: int) -> str:
        return self._groups[int(self.arm_group[index])] if 0 <= index < self.n_arms else ""

    def members(self, group: str) -> np.ndarray:
        """Indices of the active arms of ``group``."""
        code = self.group_code(group)
        n = self.n_arms
        return np.flatnonzero((self.arm_group[:n] == code) & self.active[:n])

    def all_ids(self) -> list[str]:
        """Every id ever registered, by index."""
        return list(self.ids_of(np.arange(self._n)).tolist())

    def members_all(self) -> list[str]:
        """Ids of the active arms."""
        return list(self.ids_of(np.flatnonzero(self.active[: self._n])).tolist())

    # ------------------------------------------------------------------ changes
    def check_new(self, ids: Sequence[str], group: str) -> None:
        """Raise if ``ids`` cannot be added to ``group`` (nothing changes either way)."""
        if not isinstance(group, str) or not group or not is_utf8(group):
            raise InvalidInputError(
                f"group must be a non-empty string of UTF-8 text, got {brief(group)}"
            )
        ids = as_id_list(ids, "ids")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            for at, arm_id in enumerate(ids):
                if arm_id in seen:
                    raise InvalidInputError(f"ids[{at}] = {brief(arm_id)} repeats an earlier id")
                seen.add(arm_id)
        if "\x00" in "".join(ids):  # the joined lookups use NUL as the separator
            at = next(i for i, a in enumerate(ids) if "\x00" in a)
            raise InvalidInputError(f"ids[{at}] = {ids[at]!r} contains a NUL character")
        known = self._resolve(ids, kid.ANY_OR_NEW)
        for i in np.flatnonzero(known >= 0):
            arm_id, idx = ids[i], known[i]
            if self.active[idx]:
                raise InvalidInputError(f"arm {arm_id!r} is already registered")
            if self._groups[self.arm_group[idx]] != group:
                raise InvalidInputError(
                    f"arm {arm_id!r} was registered in group "
                    f"{self._groups[self.arm_group[idx]]!r}, not {group!r}"
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
        out = self._resolve(ids, kid.ANY_OR_NEW)
        fresh = np.flatnonzero(out < 0)
        out[fresh] = self._append(*_encode([ids[i] for i in fresh]))
        self.arm_group[out] = code
        self.active[out] = True
        return out

    def _append(self, chars: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Give the ids ``chars``/``offsets`` (new, distinct) the next indices."""
        m, n = offsets.shape[0] - 1, self._n
        self.reserve(n + m)
        used = int(self._offsets[n])
        if chars.size and self._chars.dtype == np.uint8 and chars.max() >= 256:
            self._chars = self._chars.astype(np.uint32)
        if used + chars.shape[0] > self._chars.shape[0]:
            grown = np.zeros(
                max(2 * self._chars.shape[0], used + chars.shape[0]), self._chars.dtype
            )
            grown[:used] = self._chars[:used]
            self._chars = grown
        self._chars[used : used + chars.shape[0]] = chars
        self._offsets[n + 1 : n + m + 1] = used + offsets[1:]
        kid.insert(self._table, self._chars, self._offsets, n, n + m)
        self._n = n + m
        return np.arange(n, n + m, dtype=np.int64)

    def retire(self, ids: Iterable[str], by: object | None = None) -> np.ndarray:
        """Make arms ineligible; their index and learned state are kept."""
        self._check_owner(by)
        listed = as_id_list(ids, "ids")
        idx = self.lookup(listed, allow_retired=True)
        if np.unique(idx).shape[0] != idx.shape[0]:  # as add_arms and decide refuse them
            order = np.argsort(idx, kind="stable")
            twice = int(order[1:][np.diff(idx[order]) == 0][0])
            raise InvalidInputError(f"ids[{twice}] = {brief(listed[twice])} is repeated")
        self.active[idx] = False
        return idx

    def reserve(self, n: int) -> None:
        """Make room for ``n`` arms (doubling, so one-at-a-time adds stay amortised O(1))."""
        grown = self.grown_for(n)
        if grown is not None:
            self.install(grown)

    def grown_for(self, n: int) -> dict[str, np.ndarray] | None:
        """The arrays of a registry with room for ``n`` arms, the current entries copied (and
        the id table rebuilt when it must grow), or None when there is room already. The
        registry itself is unchanged: a caller that keeps it unchanged until :meth:`install`
        (e.g. under its catalogue mutex) builds them outside its serving lock."""
        cap = self.capacity
        if n <= cap:
            return None
        while cap < n:
            cap *= 2
        active = np.zeros(cap, dtype=np.bool_)
        active[: self.active.shape[0]] = self.active
        group = np.full(cap, -1, dtype=np.int64)
        group[: self.arm_group.shape[0]] = self.arm_group
        offsets = np.zeros(cap + 1, dtype=np.int64)
        offsets[: self._n + 1] = self._offsets[: self._n + 1]
        grown = {"active": active, "arm_group": group, "offsets": offsets}
        if _table_size(cap) > self._table.shape[0]:
            table = np.full(_table_size(cap), -1, dtype=np.int64)
            kid.insert(table, self._chars, offsets, 0, self._n)
            grown["table"] = table
        return grown

    def install(self, grown: Mapping[str, np.ndarray]) -> None:
        """Swap in arrays from :meth:`grown_for` (the registry unchanged since)."""
        self.active, self.arm_group = grown["active"], grown["arm_group"]
        self._offsets = grown["offsets"]
        if "table" in grown:
            self._table = grown["table"]
        self.generation += 1

    def copy(self) -> ArmRegistry:
        """An independent copy (used to stage a reconfiguration before swapping it in)."""
        out = ArmRegistry(capacity=1)
        out._n = self._n
        out._chars = self._chars.copy()
        out._offsets = self._offsets.copy()
        out._table = self._table.copy()
        out._groups = list(self._groups)
        out._group_code = dict(self._group_code)
        out.active = self.active.copy()
        out.arm_group = self.arm_group.copy()
        return out

    # ------------------------------------------------------------------ snapshots
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "registry.ids": self.ids_of(np.arange(self._n)),
            "registry.groups": np.array(self._groups, dtype=str),
            "registry.arm_group": self.arm_group.copy(),
            "registry.active": self.active.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ArmRegistry:
        """Rebuild from :meth:`to_arrays` output, checking it first (untrusted files):
        ids and groups unique non-empty UTF-8 strings without NUL, one capacity for both
        flag arrays, group codes in range for registered arms, no active slot beyond them."""
        try:
            ids_arr, groups_arr = arrays["registry.ids"], arrays["registry.groups"]
            active, arm_group = arrays["registry.active"], arrays["registry.arm_group"]
        except KeyError as err:
            raise SnapshotError(f"registry array {err} is missing") from None
        if any(a.dtype.kind != "U" or a.ndim != 1 for a in (ids_arr, groups_arr)):
            raise SnapshotError("registry ids and groups must be 1-d string arrays")
        if active.dtype != np.bool_ or arm_group.dtype != np.int64:
            raise SnapshotError("registry.active must be bool and registry.arm_group int64")
        if active.ndim != 1 or active.shape != arm_group.shape or active.shape[0] < 1:
            raise SnapshotError(
                f"registry arrays have shapes {active.shape} and {arm_group.shape}: expected "
                "one capacity >= 1"
            )
        groups = groups_arr.tolist()
        n, cap = ids_arr.shape[0], int(active.shape[0])
        out = cls(capacity=cap)
        names = cls(capacity=max(1, len(groups)))  # groups are checked as ids are
        if n > cap or names._fill(groups_arr) >= 0 or out._fill(ids_arr) >= 0:
            raise SnapshotError(
                f"registry has {n} ids for capacity {cap}, or repeated or empty ids or groups "
                "(or ones holding a NUL or a surrogate)"
            )
        codes = arm_group[:n]
        if n and (codes.min() < 0 or codes.max() >= len(groups)):
            raise SnapshotError("registry.arm_group holds a group code out of range")
        if active[n:].any():
            raise SnapshotError("registry.active marks a slot with no arm")
        out._groups = groups
        out._group_code = {g: i for i, g in enumerate(groups)}
        out.active = active.astype(np.bool_, copy=True)
        out.arm_group = arm_group.astype(np.int64, copy=True)
        return out

    @classmethod
    def from_columns(cls, ids: np.ndarray, groups: list[str], codes: np.ndarray) -> ArmRegistry:
        """Every arm of ``ids`` (a 1-d numpy string array of distinct non-empty ids without
        NUL) active in ``groups[codes]``, in one compiled pass (a catalogue file)."""
        n = ids.shape[0]
        out = cls(capacity=max(16, n))
        if len(set(groups)) != len(groups) or not all(groups):
            raise InvalidInputError(f"groups must be distinct non-empty names, got {groups}")
        if codes.shape != (n,) or (n and (codes.min() < 0 or codes.max() >= len(groups))):
            raise InvalidInputError("codes must give a group position for every id")
        bad = out._fill(ids)
        if bad >= 0:
            raise InvalidInputError(
                f"ids[{bad}] = {str(ids[bad])!r} is empty, holds a NUL or a surrogate, or "
                "repeats an earlier id"
            )
        out._groups = list(groups)
        out._group_code = {g: i for i, g in enumerate(groups)}
        out.active[:n] = True
        out.arm_group[:n] = codes
        return out

    def _fill(self, ids: np.ndarray) -> int:
        """Register the numpy string array ``ids`` into this empty registry (groups and
        flags are the caller's). Returns the first empty, NUL-holding, non-UTF-8 (a
        surrogate) or repeated id's position, else -1 (the registry is then unusable)."""
        n = ids.shape[0]
        if n == 0:
            return -1
        rows = codepoint_rows(ids)
        wide = bool(rows.size) and int(rows.max()) >= 256
        chars = np.empty(rows.size, dtype=np.uint32 if wide else np.uint8)
        bad = int(kid.pack_rows(rows, chars, self._offsets))
        if bad >= 0:
            return bad
        self._chars = chars[: self._offsets[n]].copy()
        self._n = n
        return int(kid.insert(self._table, self._chars, self._offsets, 0, n))
