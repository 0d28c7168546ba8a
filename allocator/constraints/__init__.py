"""Partner protected periods and traffic shaping: floors, caps, tilts, cold-start floors."""

from allocator.constraints.config import (
    ArmTarget,
    ColdArmsTarget,
    Constraint,
    ConstraintSet,
    GroupTarget,
    Schedule,
)
from allocator.constraints.layer import ConstrainedChoice, ConstrainedPolicy, ConstraintReport

__all__ = [
    "ArmTarget",
    "ColdArmsTarget",
    "ConstrainedChoice",
    "ConstrainedPolicy",
    "Constraint",
    "ConstraintReport",
    "ConstraintSet",
    "GroupTarget",
    "Schedule",
]
