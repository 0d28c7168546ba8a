"""A policy wrapped by the constraint layer: contracts honoured, propensities still exact.

Per request the policy fills its probability vector (no draw), the constraint kernel mixes
tilts, floors and caps into it, draws once, and advances the queues and the per-window
accounting. :meth:`ConstrainedPolicy.reconfigure` swaps a new contract set in atomically,
carrying over the queues and windows of constraints whose definition did not change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from allocator.constraints.compiled import CompiledConstraints, compile_constraints
from allocator.constraints.config import ConstraintSet
from allocator.errors import InvalidInputError, SnapshotError
from allocator.kernels import constraints as kc
from allocator.policies.base import Policy


class ConstrainedChoice(NamedTuple):
    """A decision after constraint mixing; ``propensity`` is exact for the whole procedure.

    ``adjusted_mask`` has bit ``i`` set when constraint ``names[i]`` moved probability mass
    for this decision (decoded lazily by :attr:`adjusted_by`, off the hot path).
    """

    position: int
    arm: int
    propensity: float
    forced: bool
    forced_by: str | None
    adjusted_mask: int
    names: tuple[str, ...]

    @property
    def adjusted_by(self) -> tuple[str, ...]:
        return tuple(name for i, name in enumerate(self.names) if self.adjusted_mask >> i & 1)


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


class _State:
    """Queues, rings and counters of one compiled set (replaced whole on reconfigure)."""

    def __init__(self, compiled: CompiledConstraints, window: int) -> None:
        k = compiled.def_i.shape[0]
        self.compiled = compiled
        self.st_f = np.zeros((k, kc.N_STATE_F))
        self.st_f[:, kc.S_WORST] = np.inf
        self.st_i = np.zeros((k, kc.N_STATE_I), dtype=np.int64)
        self.ring = np.zeros((2, k, window))
        self.codes = np.zeros(len(compiled.attrs), dtype=np.int64)
        self.names = tuple(c.name for c in compiled.order)

    def carry_from(self, old: _State) -> None:
        """Keep the state of constraints whose name and definition are unchanged."""
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


def as_epoch_seconds(t: Any) -> float:
    """Epoch seconds from a float or a time-zone-aware datetime."""
    if type(t) is float and math.isfinite(t):
        return t
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise InvalidInputError(f"timestamp {t.isoformat()} has no time zone: expected UTC")
        return t.timestamp()
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
        value = float(t)
        if math.isfinite(value):
            return value
    raise InvalidInputError(f"timestamp = {t!r}: expected epoch seconds or an aware datetime")


class ConstrainedPolicy:
    """A :class:`Policy` plus a :class:`ConstraintSet`, deciding with exact propensities."""

    def __init__(self, policy: Policy, constraints: ConstraintSet | None = None) -> None:
        self.policy = policy
        self.registry = policy.registry
        self._first_seen = np.full(self.registry.capacity, np.nan)
        self._member = np.zeros((0, 0), dtype=np.bool_)
        self._before = np.zeros(0)
        self._state = self._build(constraints or ConstraintSet())

    # ------------------------------------------------------------------ decisions
    def decide(
        self,
        candidates: Any,
        context: Any = None,
        attrs: Mapping[str, str] | None = None,
        timestamp: Any = 0.0,
    ) -> ConstrainedChoice:
        """Choose among ``candidates`` for a request with ``attrs`` at ``timestamp``."""
        state = self._state
        t = as_epoch_seconds(timestamp)
        if not state.names:  # no contract: the policy's own draw is the decision
            cand, pos = self.policy.base_probabilities(candidates, context, draw=True)
            p = float(self.policy._p[pos])
            return ConstrainedChoice(pos, int(cand[pos]), p, False, None, 0, ())
        codes = state.compiled.encode(attrs, state.codes)
        cand, _ = self.policy.base_probabilities(candidates, context, draw=False)
        n = cand.shape[0]
        k = state.st_f.shape[0]
        if self._member.shape[0] != k or self._member.shape[1] < n:
            self._member = np.zeros((k, max(n, 16)), dtype=np.bool_)
            self._before = np.zeros(max(n, 16))
        if self._first_seen.shape[0] < self.registry.capacity:
            grown = np.full(self.registry.capacity, np.nan)
            grown[: self._first_seen.shape[0]] = self._first_seen
            self._first_seen = grown
        pol = self.policy
        c = state.compiled
        chosen, forced, adjusted = kc.constrain_and_draw(
            pol._p, n, cand, pol.candidate_means(cand), t, codes, c.def_i, c.def_f, c.allowed,
            c.spec.eta, c.spec.backstop, c.spec.surplus, self.registry.arm_group, pol._n_obs,
            self._first_seen, state.st_f, state.st_i, state.ring, self._member, self._before,
            pol._stream,
        )  # fmt: skip
        names = state.names
        return ConstrainedChoice(
            int(chosen), int(cand[chosen]), float(pol._p[chosen]), forced >= 0,
            names[forced] if forced >= 0 else None, int(adjusted), names,
        )  # fmt: skip

    @property
    def probabilities(self) -> np.ndarray:
        """Final choice probabilities of the last request, constraint mixing included."""
        return self.policy.probabilities

    def update(self, arm: int, reward: float, context: Any = None) -> None:
        self.policy.update(arm, reward, context)

    # ------------------------------------------------------------- contract changes
    @property
    def constraints(self) -> ConstraintSet:
        return self._state.compiled.spec

    def reconfigure(self, constraints: ConstraintSet) -> None:
        """Validate and compile ``constraints`` fully, then swap it in with one assignment.

        Learned policy state is untouched; queues of unchanged constraints carry over. A
        set that fails to compile raises and leaves the running set in place.
        """
        new = self._build(constraints)
        new.carry_from(self._state)
        self._state = new  # one assignment: decide() reads self._state once

    def _build(self, spec: ConstraintSet) -> _State:
        if not isinstance(spec, ConstraintSet):
            raise InvalidInputError(
                f"constraints must be a ConstraintSet, got {type(spec).__name__}"
            )
        return _State(compile_constraints(spec, self.registry), spec.window)

    def export_state(self) -> dict[str, np.ndarray]:
        """Queues, windows and first-seen times (the set itself lives in the config)."""
        s = self._state
        return {
            "constraints.st_f": s.st_f.copy(),
            "constraints.st_i": s.st_i.copy(),
            "constraints.ring": s.ring.copy(),
            "constraints.first_seen": self._first_seen.copy(),
        }

    def restore_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        s = self._state
        for name, current in (("st_f", s.st_f), ("st_i", s.st_i), ("ring", s.ring)):
            value = arrays[f"constraints.{name}"]
            if value.shape != current.shape or value.dtype != current.dtype:
                raise SnapshotError(
                    f"constraint state {name} has shape {value.shape}, expected {current.shape}"
                )
            current[...] = value
        self._first_seen = np.array(arrays["constraints.first_seen"], dtype=np.float64)

    def carry_from(self, other: ConstrainedPolicy) -> None:
        """Take ``other``'s queues for unchanged constraints, and its first-seen times."""
        self._state.carry_from(other._state)
        n = min(self._first_seen.shape[0], other._first_seen.shape[0])
        self._first_seen[:n] = other._first_seen[:n]

    def replace_policy(self, policy: Policy) -> None:
        """Serve from ``policy`` from now on (same registry); queues are kept."""
        self.policy = policy

    # ---------------------------------------------------------------- accounting
    def report(self) -> list[ConstraintReport]:
        """Per constraint: shares served vs target, deficit, worst window, backstops, cost."""
        state = self._state
        out = []
        for i, c in enumerate(state.compiled.order):
            f, j = state.st_f[i], state.st_i[i]
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
