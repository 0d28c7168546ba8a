"""Request time: epoch seconds (UTC) from a number or a time-zone-aware datetime.

Whose clock: the caller's. Every decision and outcome carries the time the serving layer
gives it (or the facade's injected clock); contracts' schedules and the reward wait are
measured on that clock.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime
from typing import Any

import numpy as np

from allocator.errors import InvalidInputError, brief


def as_epoch_seconds(t: Any) -> float:
    """Epoch seconds from a finite real number or a time-zone-aware datetime."""
    if type(t) is float and math.isfinite(t):
        return t
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise InvalidInputError(f"timestamp {t.isoformat()} has no time zone: expected UTC")
        return t.timestamp()
    if isinstance(t, np.floating) and np.finfo(t.dtype).nmant < 52:
        # a float32 holds today's epoch seconds to 128 s: refuse rather than round
        raise InvalidInputError(
            f"timestamp = {brief(t)} is a {t.dtype}: too coarse for epoch seconds; "
            "pass a Python float or a float64"
        )
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, (bool, np.bool_)):
        with contextlib.suppress(OverflowError):  # an int past float range: refused below
            value = float(t)
            if math.isfinite(value):
                return value
    raise InvalidInputError(f"timestamp = {brief(t)}: expected epoch seconds or an aware datetime")
