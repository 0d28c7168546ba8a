"""Offline evaluation of policies from logged feedback (estimators; runners to come)."""

from allocator.replay.columns import ForeignLogConfig
from allocator.replay.dataset import LoggedData
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
from allocator.replay.sources import from_decision_log, load_foreign_log

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
    "ForeignLogConfig",
    "LoggedData",
    "diagnostics",
    "from_decision_log",
    "load_foreign_log",
]
