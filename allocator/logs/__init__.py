"""The decision log: every decision and every outcome, append-only, as Parquet parts.

The serving layer writes it through :class:`DecisionLogWriter`; offline replay reads it
back with :func:`load_decision_log` as a :class:`DecisionLog` of named arrays.
"""

from allocator.logs.loader import DamagedPart, DecisionLog, load_decision_log
from allocator.logs.schema import (
    CATALOGUE_SCHEMA,
    DECISION_SCHEMA,
    INDEXED_DECISION_SCHEMA,
    OUTCOME_SCHEMA,
    SCHEMA_VERSION,
    DecisionRecord,
    OutcomeRecord,
    check_decision,
    check_outcome,
)
from allocator.logs.writer import DecisionLogWriter

__all__ = [
    "CATALOGUE_SCHEMA",
    "DECISION_SCHEMA",
    "INDEXED_DECISION_SCHEMA",
    "OUTCOME_SCHEMA",
    "SCHEMA_VERSION",
    "DamagedPart",
    "DecisionLog",
    "DecisionLogWriter",
    "DecisionRecord",
    "OutcomeRecord",
    "check_decision",
    "check_outcome",
    "load_decision_log",
]
