"""Offline evaluation of policies from logged feedback (estimators; runners to come)."""

from allocator.replay.estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    BanditFeedback,
    Diagnostics,
    Estimate,
    Estimator,
    diagnostics,
)

__all__ = [
    "DM",
    "DR",
    "IPS",
    "SNDR",
    "SNIPS",
    "BanditFeedback",
    "Diagnostics",
    "Estimate",
    "Estimator",
    "diagnostics",
]
