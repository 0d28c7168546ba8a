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


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother = 2, 60, 60
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 4


def brief(value: object) -> str:
    """A short repr of an untrusted value for an error message: bounded in length and in
    the work it takes (a huge or deeply shared structure is never walked whole)."""
    return _BRIEF.repr(value)
