"""A chunk of simulated impressions: named arrays of fixed shapes, candidates in CSR."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from allocator.errors import InvalidInputError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Chunk:
    """``n`` consecutive impressions of a stream (global indices ``offset..offset+n-1``).

    Per impression (n,): ``timestamps``, ``category``, ``city_tier``, ``age_band``,
    ``referral``; ``contexts`` (n, d). Candidates are CSR: ``cand_ptr`` (n+1,) over
    ``cand_idx`` (nnz,) arm indices; ``p_click``, ``p_order``, ``order_value`` (nnz,) are the
    exact truth of each candidate at that impression (expected GMV = p_click·p_order·
    order_value). ``stream_seed`` and ``offset`` key the outcome draws, so the same impression
    and outcome seed give the same outcome uniforms whatever the chunking.
    """

    timestamps: F64
    contexts: F64
    category: I64
    city_tier: I64
    age_band: I64
    referral: I64
    cand_ptr: I64
    cand_idx: I64
    p_click: F64
    p_order: F64
    order_value: F64
    offset: int
    stream_seed: int

    @property
    def n(self) -> int:
        return int(self.timestamps.shape[0])

    def expected_gmv(self) -> F64:
        """Exact expected GMV of every candidate, (nnz,)."""
        return self.p_click * self.p_order * self.order_value

    def rows(self, lo: int, hi: int) -> Chunk:
        """Impressions ``lo:hi`` as a chunk of their own (their outcome draws unchanged: they
        are keyed by the global impression index)."""
        flo, fhi = int(self.cand_ptr[lo]), int(self.cand_ptr[hi])
        return dataclasses.replace(
            self,
            timestamps=self.timestamps[lo:hi], contexts=self.contexts[lo:hi],
            category=self.category[lo:hi], city_tier=self.city_tier[lo:hi],
            age_band=self.age_band[lo:hi], referral=self.referral[lo:hi],
            cand_ptr=self.cand_ptr[lo : hi + 1] - flo, cand_idx=self.cand_idx[flo:fhi],
            p_click=self.p_click[flo:fhi], p_order=self.p_order[flo:fhi],
            order_value=self.order_value[flo:fhi], offset=self.offset + lo,
        )  # fmt: skip


def seed_key(*entropy: int) -> np.uint64:
    """A ``uint64`` kernel key derived from ``entropy`` (world seed, stream seed, purpose)."""
    return np.uint64(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0])


def check_int(name: str, value: object, low: int) -> int:
    """``value`` as an int, or :class:`InvalidInputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InvalidInputError(f"{name} = {value!r}: expected an integer >= {low}")
    return int(value)
