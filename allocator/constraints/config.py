"""Contract and traffic-shaping rules: floors, caps, tilts, cold-start floors.

A constraint names a target (a group, one arm, or the cold arms of a group), a kind, the
requests it applies to (scope), and a schedule of its value over UTC time. Validation
rejects sets that no allocator could honour — floors that can sum past 1 for some request
at some time, caps below floors on the same target — naming the constraints, the time and
the requests (:mod:`allocator.constraints.feasibility`, in bounded time). Targets, and caps
that together cap every group of the catalogue, are checked against the arm registry when
the set is compiled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, overload

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator, model_validator

from allocator.config import GroupName, PositiveFloat, StrictModel
from allocator.constraints.feasibility import (
    SHAPE_CODES,
    check_caps_above_floors,
    check_floor_sums,
)
from allocator.kernels import constraints as kc

F64 = npt.NDArray[np.float64]
AttrValue = Annotated[str, Field(min_length=1, max_length=128)]
#: Size bounds, so that validating a set stays bounded in time and memory.
MAX_CONSTRAINTS = 62  # the kernel reports the constraints that moved mass in one int64
MAX_SCOPE_ATTRS = 32
MAX_SCOPE_VALUES = 256
MAX_STEPS = 10_000


class GroupTarget(StrictModel):
    group: GroupName


class ArmTarget(StrictModel):
    arm: Annotated[str, Field(min_length=1, max_length=256)]


class ColdArmsTarget(StrictModel):
    """Arms of ``group`` with fewer than ``n_min`` observations, for at most ``max_age_s``
    seconds after they were first offered as a candidate."""

    cold_in_group: GroupName
    #: bounded so it compiles to int64 and compares exactly with float observation counts
    n_min: Annotated[int, Field(ge=1, le=2**53)] = 50
    max_age_s: PositiveFloat = 14 * 86400.0


Target = GroupTarget | ArmTarget | ColdArmsTarget


class Schedule(StrictModel):
    """Value over time: ``start_value`` at ``start`` to ``end_value`` at ``end``.

    ``constant`` keeps ``start_value``; ``linear`` interpolates; ``step`` moves in ``steps``
    equal stairs. Outside [start, end) the constraint is inactive. For floors and caps the
    value is a share of in-scope impressions; for tilts it is a probability multiplier.
    """

    start: datetime
    end: datetime
    start_value: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    end_value: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    shape: Literal["constant", "linear", "step"] = "constant"
    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = 4

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no time zone: write UTC times, e.g. 'Z'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Schedule:
        if self.end <= self.start:
            raise ValueError(
                f"end {self.end.isoformat()} is not after start {self.start.isoformat()}"
            )
        return self

    @property
    def final_value(self) -> float:
        return self.start_value if self.end_value is None else self.end_value

    def value_at(self, t: float) -> float:
        """Scheduled value at epoch seconds ``t`` (0 outside the window)."""
        t0, t1 = self.start.timestamp(), self.end.timestamp()
        if not t0 <= t < t1:
            return 0.0
        return schedule_value(t, t0, t1, self.start_value, self.final_value, self.shape, self.steps)

    def values_at(self, t: F64) -> F64:
        """:meth:`value_at` over an array of epoch seconds."""
        t0, t1 = self.start.timestamp(), self.end.timestamp()
        v = schedule_value(t, t0, t1, self.start_value, self.final_value, self.shape, self.steps)
        return np.where((t >= t0) & (t < t1), v, 0.0)


@overload
def schedule_value(
    t: float, t0: float, t1: float, v0: float, v1: float, shape: str, steps: int
) -> float: ...
@overload
def schedule_value(
    t: F64, t0: float, t1: float, v0: float, v1: float, shape: str, steps: int
) -> F64: ...
def schedule_value(
    t: float | F64, t0: float, t1: float, v0: float, v1: float, shape: str, steps: int
) -> float | F64:
    """The schedule inside ``[t0, t1)``: the kernel's formula (written once), for a float
    or an array of epoch seconds (the result has its shape)."""
    arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
    out = np.empty_like(arr)
    kc.schedule_values(arr, t0, t1, v0, v1, SHAPE_CODES[shape], steps, out)
    return float(out[0]) if np.ndim(t) == 0 else out.reshape(np.shape(t))


class Constraint(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
    kind: Literal["floor", "cap", "tilt"]
    target: Target
    scope: Annotated[
        dict[
            Annotated[str, Field(min_length=1, max_length=128)],
            Annotated[list[AttrValue], Field(max_length=MAX_SCOPE_VALUES)],
        ],
        Field(max_length=MAX_SCOPE_ATTRS),
    ] = Field(default_factory=dict)
    schedule: Schedule
    priority: int = 0
    on_missing: Literal["skip", "carry"] = "skip"

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        for attr, values in self.scope.items():
            if not values:
                raise ValueError(
                    f"constraint {self.name!r}: scope.{attr} is empty (matches nothing)"
                )
        s = self.schedule
        if self.kind in ("floor", "cap") and max(s.start_value, s.final_value) > 1.0:
            raise ValueError(
                f"constraint {self.name!r}: a {self.kind} share must be in [0, 1], got "
                f"{s.start_value} → {s.final_value}"
            )
        if isinstance(self.target, ColdArmsTarget) and self.kind != "floor":
            raise ValueError(f"constraint {self.name!r}: cold-arm targets take floors only")
        return self

    def covers(self, request: dict[str, str]) -> bool:
        return all(request.get(attr) in values for attr, values in self.scope.items())


class ConstraintSet(StrictModel):
    """A validated set of constraints plus the layer's tuning.

    ``window`` is the guarantee window W (in-scope impressions); ``eta`` turns the unmet
    share balance into extra floor probability; ``surplus`` caps how much over-service (in
    impressions) a floor banks against later probability (0 = never); ``backstop`` is the
    clipped queue length B past which a decision is forced onto the target (and flagged).
    """

    window: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    eta: Annotated[float, Field(gt=0.0, le=10.0, allow_inf_nan=False)] = 0.05
    backstop: Annotated[float, Field(ge=1.0, allow_inf_nan=False)] = 30.0
    surplus: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 10.0
    constraints: Annotated[list[Constraint], Field(max_length=MAX_CONSTRAINTS)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _consistent(self) -> ConstraintSet:
        names = [c.name for c in self.constraints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"constraint names must be unique, repeated: {dupes}")
        check_caps_above_floors(self.constraints)
        check_floor_sums(self.constraints)
        return self
