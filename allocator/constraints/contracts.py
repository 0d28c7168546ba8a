"""The running contract set: compiled definitions plus their queues and window accounting.

The decision pipeline reads :meth:`Contracts.kernel_args` and the kernel mixes tilts, floors
and caps into the policy's probabilities, draws once and advances the queues — for one
request or a batch alike. A reconfigured set is built on the side and takes over the
queues of constraints whose definition did not change (:meth:`carry_from`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from allocator.constraints.compiled import CompiledConstraints, check_attrs, compile_constraints
from allocator.constraints.config import ConstraintSet
from allocator.errors import InvalidInputError, SnapshotError
from allocator.kernels import constraints as kc
from allocator.registry import ArmRegistry


@dataclass(frozen=True)
class ConstraintReport:
    """Accounting of one constraint since it was installed (or carried over)."""

    name: str
    kind: str
    impressions: int
    served_share: float
    target_share: float
    deficit: float
    worst_window_slack: float | None
    backstops: int
    cost: float


class Contracts:
    """A compiled :class:`ConstraintSet` with its state, resolved against one registry."""

    def __init__(self, spec: ConstraintSet | None, registry: ArmRegistry) -> None:
        spec = ConstraintSet() if spec is None else spec
        if not isinstance(spec, ConstraintSet):
            raise InvalidInputError(
                f"constraints must be a ConstraintSet, got {type(spec).__name__}"
            )
        self.compiled: CompiledConstraints = compile_constraints(spec, registry)
        k = self.compiled.def_i.shape[0]
        self.names: tuple[str, ...] = tuple(c.name for c in self.compiled.order)
        self.st_f = np.zeros((k, kc.N_STATE_F))
        self.st_f[:, kc.S_WORST] = np.inf
        self.st_i = np.zeros((k, kc.N_STATE_I), dtype=np.int64)
        self.ring = np.zeros((2, k, spec.window))
        self.first_seen = np.full(registry.capacity, np.nan)
        self._member = np.zeros((k, 16), dtype=np.bool_)
        self._before = np.zeros(16)
        self._no_codes = np.zeros((1, len(self.compiled.attrs)), dtype=np.int64)
        self._args: tuple[Any, ...] | None = None  # kernel_args, until an array is replaced

    @property
    def spec(self) -> ConstraintSet:
        return self.compiled.spec

    @property
    def n_attrs(self) -> int:
        return len(self.compiled.attrs)

    # ------------------------------------------------------------------ the kernel side
    def reserve(self, capacity: int, n_candidates: int) -> None:
        """Size per-arm and per-candidate buffers before a kernel call."""
        if self.first_seen.shape[0] < capacity:
            grown = np.full(capacity, np.nan)
            grown[: self.first_seen.shape[0]] = self.first_seen
            self.first_seen = grown
            self._args = None
        if self._member.shape[1] < n_candidates:
            width = max(n_candidates, 2 * self._member.shape[1])
            self._member = np.zeros((self._member.shape[0], width), dtype=np.bool_)
            self._before = np.zeros(width)
            self._args = None

    def grown(self, capacity: int) -> np.ndarray:
        """A first-seen array for ``capacity`` arms, filled off any lock (see
        :meth:`install_grown`)."""
        return np.full(max(capacity, self.first_seen.shape[0]), np.nan)

    def install_grown(self, first_seen: np.ndarray) -> np.ndarray:
        """Copy first-seen times into the array from :meth:`grown` and use it; returns the
        replaced array."""
        old = self.first_seen
        first_seen[: old.shape[0]] = old
        self.first_seen = first_seen
        self._args = None
        return old

    def kernel_args(self, arm_group: np.ndarray, n_obs: np.ndarray) -> tuple[Any, ...]:
        """The contract arguments of the decide kernels, in their order (kept while no
        array in them is replaced: a decide reads them once per call)."""
        args = self._args
        if args is None or args[6] is not arm_group or args[7] is not n_obs:
            c = self.compiled
            s = c.spec
            args = self._args = (
                c.def_i, c.def_f, c.allowed, s.eta, s.backstop, s.surplus, arm_group, n_obs,
                self.first_seen, self.st_f, self.st_i, self.ring, self._member, self._before,
            )  # fmt: skip
        return args

    def encode(self, attrs: Mapping[str, str] | None) -> np.ndarray:
        """One request's attributes as a (1, A) code row (0 = a value no scope names)."""
        if attrs is None:
            return self._no_codes
        if not self.compiled.attrs:
            check_attrs(attrs)
            return self._no_codes
        return self.compiled.encode(attrs, np.zeros(len(self.compiled.attrs), dtype=np.int64))[
            None, :
        ]

    def encode_many(self, attrs: Sequence[Mapping[str, str] | None]) -> np.ndarray:
        """Attributes of R requests as an (R, A) code matrix."""
        out = np.zeros((len(attrs), len(self.compiled.attrs)), dtype=np.int64)
        if self.compiled.attrs:
            for r, a in enumerate(attrs):
                out[r] = self.encode(a)[0]
        else:
            for a in attrs:
                self.encode(a)
        return out

    def encode_columns(self, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Attributes given as one string array per attribute (R,) → (R, A) codes.

        Vectorised (one ``searchsorted`` per attribute): the path of simulators and replays.
        Attributes not given, or values no scope names, get code 0.
        """
        out = np.zeros((n, len(self.compiled.attrs)), dtype=np.int64)
        for i, name in enumerate(self.compiled.attrs):
            col = columns.get(name)
            if col is None:
                continue
            values = np.asarray(col)
            if values.shape != (n,):
                raise InvalidInputError(
                    f"attrs[{name!r}] has shape {values.shape}, expected ({n},)"
                )
            vocab = self.compiled.vocab[i]
            if not vocab:
                continue
            keys = np.array(sorted(vocab), dtype=str)
            codes = np.array([vocab[k] for k in keys], dtype=np.int64)
            where = np.searchsorted(keys, values.astype(str))
            hit = where < keys.shape[0]
            hit[hit] = keys[where[hit]] == values.astype(str)[hit]
            out[hit, i] = codes[where[hit]]
        return out

    # ------------------------------------------------------------ contract changes
    def carry_from(self, old: Contracts) -> None:
        """Keep the state of constraints whose name and definition are unchanged, and the
        arms' first-seen times."""
        same_window = old.ring.shape[2] == self.ring.shape[2]
        previous = {c.name: (i, c) for i, c in enumerate(old.compiled.order)}
        for i, c in enumerate(self.compiled.order):
            hit = previous.get(c.name)
            if hit is None or hit[1] != c:
                continue
            j = hit[0]
            self.st_f[i] = old.st_f[j]
            self.st_i[i] = old.st_i[j]
            if same_window:
                self.ring[:, i] = old.ring[:, j]
            else:  # a new window restarts the window accounting, not the queue
                self.st_f[i, [kc.S_WIN_SERVED, kc.S_WIN_TARGET]] = 0.0
                self.st_f[i, kc.S_WORST] = np.inf
                self.st_i[i, [kc.J_RING_POS, kc.J_N_SEEN]] = 0
        self.reserve(old.first_seen.shape[0], 0)
        n = old.first_seen.shape[0]
        self.first_seen[:n] = old.first_seen

    # ------------------------------------------------------------------ snapshots
    def export_state(self) -> dict[str, np.ndarray]:
        """Queues, windows and first-seen times (the set itself lives in the config)."""
        return {
            "constraints.st_f": self.st_f.copy(),
            "constraints.st_i": self.st_i.copy(),
            "constraints.ring": self.ring.copy(),
            "constraints.first_seen": self.first_seen.copy(),
        }

    def restore_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Load :meth:`export_state` output after checking shapes and dtypes."""
        checked = {}
        for name, current in (
            ("st_f", self.st_f), ("st_i", self.st_i), ("ring", self.ring)
        ):  # fmt: skip
            value = arrays.get(f"constraints.{name}")
            if value is None:
                raise SnapshotError(f"constraint state {name} is missing")
            if value.shape != current.shape or value.dtype != current.dtype:
                raise SnapshotError(
                    f"constraint state {name} has shape {value.shape}, expected {current.shape}"
                )
            # C order whatever the file's: the bound decide entry points are typed for it
            checked[name] = np.array(value, copy=True, order="C")
        first = arrays.get("constraints.first_seen")
        if first is None or first.ndim != 1 or first.dtype != np.float64:
            raise SnapshotError("constraint state first_seen is missing or not float64 (n,)")
        st_f, st_i, ring = checked["st_f"], checked["st_i"], checked["ring"]
        window = ring.shape[2]
        worst_ok = np.isfinite(st_f) | (
            np.isposinf(st_f) & (np.arange(st_f.shape[1]) == kc.S_WORST)[None, :]
        )
        if not worst_ok.all() or not np.isfinite(ring).all() or np.isinf(first).any():
            raise SnapshotError("constraint state holds NaN or inf")
        pos, seen = st_i[:, kc.J_RING_POS], st_i[:, kc.J_N_SEEN]
        if st_i.size and (
            (pos < 0).any() or (pos >= window).any() or (seen < 0).any()
            or (st_i[:, kc.J_BACKSTOPS] < 0).any()
        ):  # fmt: skip
            raise SnapshotError("constraint state holds a ring position or count out of range")
        self.st_f, self.st_i, self.ring = st_f, st_i, ring
        self.first_seen = np.array(first, copy=True, order="C")
        self._args = None

    # ---------------------------------------------------------------- accounting
    def report(self) -> list[ConstraintReport]:
        """Per constraint: shares served vs target, deficit, worst window, backstops, cost."""
        out = []
        for i, c in enumerate(self.compiled.order):
            f, j = self.st_f[i], self.st_i[i]
            seen = int(j[kc.J_N_SEEN])
            worst = float(f[kc.S_WORST])
            out.append(ConstraintReport(
                name=c.name,
                kind=c.kind,
                impressions=seen,
                served_share=float(f[kc.S_TOTAL_SERVED]) / seen if seen else 0.0,
                target_share=float(f[kc.S_TOTAL_TARGET]) / seen if seen else 0.0,
                deficit=float(f[kc.S_QUEUE]),
                worst_window_slack=None if math.isinf(worst) else worst,
                backstops=int(j[kc.J_BACKSTOPS]),
                cost=float(f[kc.S_COST]),
            ))  # fmt: skip
        return out
