"""What a decide kernel's refusal means, as the typed error the caller gets.

Kernels never raise: they return a negative code (:mod:`allocator.kernels.choice`) and
write the refused request and position into an ``err`` buffer, having changed nothing.
These functions turn that report into the error naming the request, the field and the
value, the same whichever entry point (single, fused, batch) the request took.
"""

from __future__ import annotations

from typing import NoReturn

import numpy as np

from allocator.errors import InvalidInputError, UnknownArmError
from allocator.inputs import as_float_array
from allocator.kernels import choice as ck

_CANDIDATE_ERRORS = {
    ck.ERR_EMPTY: (InvalidInputError, "candidates is empty: expected at least one arm"),
    ck.ERR_RANGE: (UnknownArmError, "is not a registered arm index"),
    ck.ERR_RETIRED: (UnknownArmError, "is a retired arm"),
    ck.ERR_DUPLICATE: (InvalidInputError, "appears twice in candidates"),
    ck.ERR_NONFINITE: (InvalidInputError, "context contains NaN or inf"),
    ck.ERR_TOO_MANY: (InvalidInputError, "too many candidates"),
}


def raise_refusal(
    code: int, err: np.ndarray, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray,
    n_arms: int, slots: int,
) -> NoReturn:  # fmt: skip
    """Raise the error a kernel reported for a CSR batch (``code`` < 0, ``err``: request,
    position) over a registry of ``n_arms`` and a policy of ``slots`` candidates at most."""
    r, j = int(err[0]), int(err[1])
    where = f"request {r}: " if ptr.shape[0] > 2 else ""
    if code == ck.ERR_NONFINITE:
        as_float_array(xs[r], f"{where}context", (-1,))
    cand = idx[ptr[r] : ptr[r + 1]]
    exc, text = _CANDIDATE_ERRORS[int(code)]
    if code in (ck.ERR_RANGE, ck.ERR_RETIRED, ck.ERR_DUPLICATE):
        if code == ck.ERR_RETIRED and cand[j] >= n_arms:
            exc, text = _CANDIDATE_ERRORS[ck.ERR_RANGE]
        raise exc(f"{where}candidates[{j}] = {int(cand[j])} {text}")
    if code == ck.ERR_TOO_MANY:
        raise exc(
            f"{where}{cand.shape[0]} candidates: {text}, expected at most max_candidates = {slots}"
        )
    raise exc(f"{where}{text}")


def check_synced(n_arms: int, n_synced: np.ndarray) -> None:
    """Refuse a call over a registry that has arms the policy holds no state for
    (``n_synced`` (1,): the arms the policy has state for)."""
    if n_arms != n_synced[0]:
        raise InvalidInputError(
            f"the registry has {n_arms} arms, this policy has state for "
            f"{int(n_synced[0])}: call sync_arms() after adding arms to a "
            "registry directly (an Engine or Allocator does it in add_arms)"
        )
