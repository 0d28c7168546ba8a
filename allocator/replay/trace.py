"""The per-event trace of a nonstationary replay, kept in a temporary file and read in chunks.

The interval maps every DR term to [0, 1] with bounds that depend on the whole walk, so the
terms are read twice: once as the walk writes them, once when the bounds are known. They
live in a memory-mapped temporary file, unlinked at once and gone with the last array that
maps it: the operating system pages them, and the replay's own memory stays a chunk's
whatever the log's length (on disk: 25 bytes a walked event, 49 when the log lacks the
candidates' logging probabilities and the bounds wait for the walk's largest weight).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from allocator.errors import EvaluationRefused
from allocator.replay.confidence import AnytimeEstimate, DriftingMean
from allocator.replay.dataset import F64

#: events read at a time when the trace is summarised
READ_CHUNK = 1 << 16


class Trace(NamedTuple):
    """Per walked event: scaled DR term, the ``c`` it was walked with, whether accepted,
    its weight ``d/p``; the bounds every term lies in; the reward range used for scaling."""

    terms: F64
    c: F64
    accepted: np.ndarray
    weights: F64
    bounds: tuple[float, float]
    span: tuple[float, float]


class Summary(NamedTuple):
    """A trace's estimate (scaled units) and the statistics reported with it."""

    estimate: AnytimeEstimate
    n_accepted: int
    truncated: int
    ess: float


def spilled(n: int, dtypes: Sequence[npt.DTypeLike]) -> list[np.ndarray]:
    """Zeroed arrays of ``n`` elements, one per dtype, mapped from one temporary file."""
    if n == 0:
        return [np.zeros(0, dtype=d) for d in dtypes]
    sizes = [n * np.dtype(d).itemsize for d in dtypes]
    out: list[np.ndarray] = []
    with tempfile.TemporaryFile() as f:  # the maps keep the (unlinked) file alive
        f.truncate(sum(sizes))
        offset = 0
        for dtype, size in zip(dtypes, sizes, strict=True):
            out.append(np.memmap(f, dtype=dtype, mode="r+", offset=offset, shape=(n,)))
            offset += size
    return out


def pieces(m: int) -> Iterator[slice]:
    """``0:m`` in slices of :data:`READ_CHUNK`."""
    for lo in range(0, m, READ_CHUNK):
        yield slice(lo, min(m, lo + READ_CHUNK))


def nth_accepted(accepted: np.ndarray, n: int) -> int:
    """Index of the ``n``-th (1-based) True of ``accepted``, or -1 if it has fewer."""
    seen = 0
    for rows in pieces(accepted.shape[0]):
        part = np.flatnonzero(accepted[rows])
        if seen + part.shape[0] >= n:
            return rows.start + int(part[n - seen - 1])
        seen += part.shape[0]
    return -1


def summarise(trace: Trace, m: int, alpha: float, n_plan: int) -> Summary:
    """The estimate over the first ``m`` walked events of ``trace``, read in chunks.

    The adaptive ``c`` starts at ``c_max`` for the first state only: the events up to the
    first acceptance weigh as the next.
    """
    first = nth_accepted(trace.accepted[:m], 1)
    if first < 0:
        raise EvaluationRefused(
            f"no event was accepted out of {m} walked: the log is too short, or the logger "
            "too unlike the policy, to say anything about it"
        )
    c_next = float(trace.c[first + 1]) if first + 1 < m else np.inf
    sequence = DriftingMean(*trace.bounds, alpha, n_plan)
    n_acc = truncated = 0
    # the weights' sums relative to the largest weight so far: a weight near 1/2.2e-308
    # (a propensity at its floor) squares past the float range
    w_max = s1 = s2 = 0.0
    for rows in pieces(m):
        c, w = np.array(trace.c[rows]), np.asarray(trace.weights[rows])
        truncated += int(np.count_nonzero(c * w > 1.0))
        if rows.start <= first:
            early = slice(0, first + 1 - rows.start)
            np.minimum(c[early], c_next, out=c[early])
        sequence.feed(trace.terms[rows], c)
        n_acc += int(np.count_nonzero(trace.accepted[rows]))
        top = float(w.max()) if w.shape[0] else 0.0
        if top > w_max:
            s1, s2 = s1 * (w_max / top), s2 * (w_max / top) ** 2
            w_max = top
        if w_max > 0.0:
            scaled = w / w_max
            s1 += float(scaled.sum())
            s2 += float(np.square(scaled).sum())  # not BLAS: its threads spin on a busy machine
    ess = s1**2 / s2 if s2 > 0.0 else 0.0
    return Summary(sequence.estimate(), n_acc, truncated, ess)
