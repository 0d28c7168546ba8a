"""The project's exception hierarchy.

Every error the library raises on bad input derives from :class:`AllocatorError`, so the
serving layer can catch one type; the subclasses also derive from the matching builtin
(``ValueError``, ``KeyError``) so generic handlers keep working.
"""

from __future__ import annotations

import reprlib


class AllocatorError(Exception):
    """Base class of every error raised by ``allocator``."""


class ConfigError(AllocatorError, ValueError):
    """A configuration file or model is invalid (names the field and the value)."""


class InvalidInputError(AllocatorError, ValueError):
    """A request, context, reward or array argument has the wrong shape, dtype or value."""


class UnknownArmError(AllocatorError, KeyError):
    """An arm id or index is not registered, or has been retired."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class SnapshotError(AllocatorError):
    """A snapshot file is corrupt, truncated, of another version, or not ours."""


class EvaluationRefused(AllocatorError):
    """An evaluation would be biased on this data, so none is returned.

    The message says why (e.g. a learning policy replayed on non-uniformly logged rounds)
    and what to do instead.
    """


class DecisionLogError(AllocatorError):
    """The decision log cannot be written: disk full, permission, a vanished directory, or
    a writer of the same replica already holds it (:class:`LogLocked`)."""


class LogLocked(DecisionLogError):
    """Another open writer holds the decision log of this directory and replica."""


class LogCorrupt(InvalidInputError):
    """A decision-log part is damaged, forged, renamed or missing; ``part`` names it and
    ``reason`` says what is wrong."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part} {reason}")
        self.part = part
        self.reason = reason


class AutosaveError(AllocatorError):
    """An autosave failed under ``serving.on_autosave_error: raise``: calls are refused,
    with nothing changed, until a save succeeds."""


class _Brief(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        # Python refuses the repr of an int past 4,300 digits, and a long one is slow to make
        if x.bit_length() > 4 * self.maxlong:
            return f"<int of {x.bit_length():,} bits>"
        return super().repr_int(x, level)


_BRIEF = _Brief()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother = 2, 60, 60
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 4


def brief(value: object) -> str:
    """A short repr of an untrusted value for an error message: bounded in length and in
    the work it takes (a huge or deeply shared structure is never walked whole)."""
    return _BRIEF.repr(value)
