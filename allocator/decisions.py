"""The two decision types: one request (:class:`Decision`) and a batch (:class:`Decisions`).

Every entry point — a bare policy, the engine with contracts, the serving facade — returns
these; the facade only fills in the ids it owns (decision id, request id).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np


def named_constraints(
    forced: int, adjusted: int, names: tuple[str, ...]
) -> tuple[str | None, tuple[str, ...]]:
    """The forcing constraint's name (or None) and the names set in the ``adjusted`` mask."""
    moved = tuple(n for i, n in enumerate(names) if adjusted >> i & 1) if adjusted else ()
    return (names[forced] if forced >= 0 else None), moved


class Decision(NamedTuple):
    """What the serving layer shows and logs for one impression.

    ``propensity`` is the probability the whole procedure (policy, ε, contracts) had of
    choosing ``arm_id``; ``position`` is its place in the request's candidate list.
    """

    position: int
    arm_index: int
    propensity: float
    arm_id: str = ""
    group: str = ""
    forced_by: str | None = None
    adjusted_by: tuple[str, ...] = ()
    model_version: int = 0
    timestamp: float = 0.0
    decision_id: str | None = None
    request_id: str | None = None

    @property
    def forced(self) -> bool:
        """True when a contract's backstop restricted the draw."""
        return self.forced_by is not None


def new_decision(fields: tuple[Any, ...]) -> Decision:
    """A :class:`Decision` from all its fields in order, without the argument handling of
    the generated constructor (the hot path builds one per call)."""
    return tuple.__new__(Decision, fields)


def bare_decision(position: int, arm_index: int, propensity: float, version: int) -> Decision:
    """A policy's :class:`Decision` (no ids, contracts or time)."""
    return new_decision(
        (position, arm_index, propensity, "", "", None, (), version, 0.0, None, None)
    )


@dataclass(frozen=True)
class Decisions:
    """Decisions for R requests given as CSR candidate lists.

    ``probabilities`` (nnz,) is aligned with the batch's ``cand_idx``; ``forced`` holds the
    index into ``constraint_names`` of the contract that forced request ``r`` (-1: none),
    and ``adjusted`` a bitmask over ``constraint_names`` of contracts that moved mass.
    """

    positions: np.ndarray
    arms: np.ndarray
    propensities: np.ndarray
    probabilities: np.ndarray
    forced: np.ndarray
    adjusted: np.ndarray
    timestamps: np.ndarray
    constraint_names: tuple[str, ...] = ()
    model_version: int = 0
    decision_ids: tuple[str, ...] | None = None
    request_ids: tuple[str | None, ...] | None = None

    def __len__(self) -> int:
        return int(self.arms.shape[0])

    def forced_by(self, r: int) -> str | None:
        return named_constraints(int(self.forced[r]), 0, self.constraint_names)[0]

    def adjusted_by(self, r: int) -> tuple[str, ...]:
        return named_constraints(-1, int(self.adjusted[r]), self.constraint_names)[1]

    def with_ids(
        self, decision_ids: tuple[str, ...], request_ids: tuple[str | None, ...]
    ) -> Decisions:
        return replace(self, decision_ids=decision_ids, request_ids=request_ids)
