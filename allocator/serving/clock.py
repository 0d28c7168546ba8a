"""Whose time an allocator runs on: the caller's event time, or its own clock — never both.

``serving.time`` chooses: ``event`` (every decide, update and expire carries the event's
epoch seconds), ``wall`` (none does; the allocator reads its injected clock) or ``auto``
(the first call decides, and it is then fixed). A call of the other kind is a typed error
before anything changes, so decisions made on event time are never expired by the wall
clock. Times are epoch seconds (UTC) in [2000-01-01, 2100-01-01); on event time a call may
not jump more than ``serving.max_time_jump_s`` past the latest time seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from allocator.errors import InvalidInputError, brief
from allocator.timestamps import as_epoch_seconds

EPOCH_MIN = 946_684_800.0  # 2000-01-01T00:00:00Z
EPOCH_MAX = 4_102_444_800.0  # 2100-01-01T00:00:00Z


class ServingClock:
    """Turns a call's ``timestamp`` argument into its time, or refuses it."""

    def __init__(
        self, mode: str, clock: Callable[[], float], max_jump_s: float, fixed: str | None = None
    ) -> None:
        self.configured = mode
        #: "event" or "wall" once known (``auto`` fixes it with the first accepted call)
        self.mode: str | None = fixed if fixed is not None else (None if mode == "auto" else mode)
        self.clock = clock
        self.max_jump_s = max_jump_s

    def time_of(
        self, timestamp: Any, what: str, latest: float, latest_if_missing: bool = False
    ) -> tuple[float, str]:
        """(time, mode) of a call; nothing is fixed until :meth:`commit`.

        ``latest_if_missing``: on event time, a call without a timestamp happens at the
        latest time seen (an outcome or an expiry "now", in event time — never the wall
        clock's now).
        """
        if timestamp is None:
            if self.mode == "event" and latest_if_missing and math.isfinite(latest):
                return latest, "event"
            if self.mode == "event":
                raise InvalidInputError(
                    f"{what}: timestamp is required — this allocator runs on event time "
                    "(serving.time, or fixed by its first call); pass the event's epoch seconds"
                )
            t, mode = float(self.clock()), "wall"
        else:
            if self.mode == "wall":
                raise InvalidInputError(
                    f"{what}: timestamp = {brief(timestamp)} given, but this allocator runs "
                    "on its own clock (serving.time, or fixed by its first call); omit it"
                )
            t = (
                timestamp if type(timestamp) is float and math.isfinite(timestamp)
                else as_epoch_seconds(timestamp)
            )  # fmt: skip
            mode = "event"
        if not EPOCH_MIN <= t < EPOCH_MAX:
            raise InvalidInputError(
                f"{what}: time {t!r} is outside [2000-01-01, 2100-01-01) in epoch seconds"
            )
        if mode == "event" and math.isfinite(latest) and t > latest + self.max_jump_s:
            raise InvalidInputError(
                f"{what}: time {t} is {t - latest:.0f} s after the latest one seen: more than "
                f"serving.max_time_jump_s = {self.max_jump_s}"
            )
        return t, mode

    def times_of(
        self, stamps: Sequence[Any], what: str, latest: float
    ) -> tuple[np.ndarray, set[str]]:
        """:meth:`time_of` of each of a batch's ``stamps`` (``what`` formats with the
        request's position), and the modes they take. Float stamps are checked as one
        array; the first bad one, or any other form, goes through :meth:`time_of`, so the
        errors are the same."""
        if self.mode != "wall" and all(type(s) is float for s in stamps):
            t = np.array(stamps, dtype=np.float64)
            ok = (t >= EPOCH_MIN) & (t < EPOCH_MAX)  # NaN fails both
            if math.isfinite(latest):
                ok &= t <= latest + self.max_jump_s
            if ok.all():
                return t, {"event"} if t.size else set()
        out = np.empty(len(stamps))
        modes: set[str] = set()
        for i, s in enumerate(stamps):
            out[i], mode = self.time_of(s, what.format(i), latest)
            modes.add(mode)
        return out, modes

    def commit(self, mode: str) -> None:
        """Fix the mode after a call was accepted (a no-op once fixed)."""
        self.mode = mode
