"""Partner protected periods and traffic shaping: floors, caps, tilts, cold-start floors."""

from allocator.constraints.config import (
    ArmTarget,
    ColdArmsTarget,
    Constraint,
    ConstraintSet,
    GroupTarget,
    Schedule,
)
from allocator.constraints.contracts import ConstraintReport, Contracts

__all__ = [
    "ArmTarget",
    "ColdArmsTarget",
    "Constraint",
    "ConstraintReport",
    "ConstraintSet",
    "Contracts",
    "GroupTarget",
    "Schedule",
]
