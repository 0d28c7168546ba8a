"""Numba kernels of the scenario runner: per-row draws and argmaxes over CSR candidates.

Rows are impressions, ``ptr`` (n+1,) delimits each row's candidates in the flat arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def split_weights(ptr, cand_group, shares, out):
    """Static-split weights: a group's share divided evenly among its candidates in the row.

    Groups without a share get 0; a row whose candidates all have 0 falls back to uniform.
    ``cand_group`` (nnz,) int64 group codes, ``shares`` (n_groups,), ``out`` (nnz,).
    """
    n_groups = shares.shape[0]
    counts = np.zeros(n_groups, dtype=np.int64)
    for r in range(ptr.shape[0] - 1):
        lo, hi = ptr[r], ptr[r + 1]
        for j in range(lo, hi):
            counts[cand_group[j]] += 1
        total = 0.0
        for j in range(lo, hi):
            g = cand_group[j]
            out[j] = shares[g] / counts[g]
            total += out[j]
        for j in range(lo, hi):
            out[j] = out[j] / total if total > 0.0 else 1.0 / (hi - lo)
            counts[cand_group[j]] = 0


@njit(cache=True, nogil=True)
def draw_rows(ptr, probs, u, pos_out, prop_out):
    """Draw one position per row from row-normalised ``probs`` with uniforms ``u`` (n,)."""
    for r in range(ptr.shape[0] - 1):
        lo, hi = ptr[r], ptr[r + 1]
        acc = 0.0
        pick = hi - 1
        for j in range(lo, hi):
            acc += probs[j]
            if u[r] < acc:
                pick = j
                break
        pos_out[r] = pick - lo
        prop_out[r] = probs[pick]


@njit(cache=True, nogil=True)
def row_argmax(ptr, values, pos_out, best_out):
    """Position and value of each row's largest value (first on ties)."""
    for r in range(ptr.shape[0] - 1):
        lo, hi = ptr[r], ptr[r + 1]
        best = lo
        for j in range(lo + 1, hi):
            if values[j] > values[best]:
                best = j
        pos_out[r] = best - lo
        best_out[r] = values[best]


@njit(cache=True, nogil=True)
def row_expectation(ptr, probs, values, out):
    """Σ_j probs[j]·values[j] per row (a policy's true expected value per impression)."""
    for r in range(ptr.shape[0] - 1):
        acc = 0.0
        for j in range(ptr[r], ptr[r + 1]):
            acc += probs[j] * values[j]
        out[r] = acc


@njit(cache=True, nogil=True)
def present_groups(ptr, cand_group, out):
    """Bitmask per row of the groups among its candidates: ``out`` (n, W) uint64 zeros,
    group ``g`` at bit ``g % 64`` of word ``g // 64`` (W words, so any number of groups)."""
    one = np.uint64(1)
    for r in range(ptr.shape[0] - 1):
        for j in range(ptr[r], ptr[r + 1]):
            g = cand_group[j]
            out[r, g >> 6] |= one << np.uint64(g & 63)


def group_words(n_groups: int) -> int:
    """Words per row of :func:`present_groups` for ``n_groups`` groups."""
    return max(1, (n_groups + 63) // 64)


def has_group(present: np.ndarray, group: int) -> np.ndarray:
    """Rows of a :func:`present_groups` table whose candidates include ``group``."""
    word = present[:, group >> 6]
    return (word >> np.uint64(group & 63)) & np.uint64(1) == np.uint64(1)
