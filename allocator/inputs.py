"""Input shaping at the boundary: arrays of indices and floats, CSR candidate lists, text.

One implementation of each check, used by policies, the engine, the facade and replay, so a
bad request reads the same everywhere and nothing unchecked reaches a kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from allocator.errors import InvalidInputError, brief


def first_rows(mask: np.ndarray, k: int = 5) -> list[int]:
    """Positions of the first ``k`` true entries (for error messages)."""
    return [int(i) for i in np.flatnonzero(mask)[:k]]


def is_utf8(text: str) -> bool:
    """True when ``text`` has a UTF-8 form. A Python str may hold a lone surrogate
    (``"\\ud800"``), which no log part, file or other process can take."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def invalid_utf8(values: pa.ChunkedArray) -> npt.NDArray[np.bool_] | None:
    """The rows of a text column (string, large or dictionary-encoded) whose bytes are not
    UTF-8; None when there are none or the column is not text. A Parquet reader takes
    whatever bytes a writer marked as text, and their conversion to Python fails later
    with a raw error. One C pass says whether; rows are found one by one only then."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    try:
        values.validate(full=True)
    except pa.ArrowInvalid:
        cells = values.cast(pa.large_binary()).to_pylist()
        return np.fromiter(map(_not_utf8, cells), np.bool_, len(cells))
    return None


def _not_utf8(cell: bytes | None) -> bool:
    try:
        if cell is not None:
            cell.decode()
    except UnicodeDecodeError:
        return True
    return False


def as_id_list(values: Any, name: str) -> list[str]:
    """``values`` (one id, or a list, tuple or 1-d array of ids) as a list of non-empty
    UTF-8 strings, or a typed error naming ``name`` and the first bad entry."""
    if isinstance(values, str):
        values = [values]
    elif isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InvalidInputError(f"{name} must be 1-d, got shape {values.shape}")
        values = values.tolist()
    elif not isinstance(values, (list, tuple)):
        raise InvalidInputError(f"{name} must be a list of arm ids, got {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"{name}[{i}] must be a non-empty string, got {brief(value)}")
    if not is_utf8("".join(values)):  # one encode for the list; the loop only names the id
        i = next(i for i, value in enumerate(values) if not is_utf8(value))
        raise InvalidInputError(f"{name}[{i}] = {brief(values[i])}: expected UTF-8 text")
    return list(values)


def as_index_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-d C-contiguous int64 array, or a typed error naming ``name``."""
    if type(values) is np.ndarray and values.dtype == np.int64 and values.ndim == 1:
        return values if values.flags.c_contiguous else np.ascontiguousarray(values)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-d, got shape {arr.shape}")
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name} must hold integer arm indices, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_float_array(
    values: Any, name: str, shape: tuple[int, ...], bound: float = math.inf
) -> np.ndarray:
    """``values`` as a finite float64 array of ``shape`` (-1 = any) with every entry's
    magnitude at most ``bound``, or a typed error naming the first bad entry."""
    arr = values
    if not (type(arr) is np.ndarray and arr.dtype == np.float64 and arr.flags.c_contiguous):
        try:
            # no dtype first: strings ("1"), booleans and Decimals are refused, not parsed
            arr = np.asarray(values)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{name} must be numeric, got {type(values).__name__}"
            ) from None
        if arr.dtype.kind == "O" and all(type(v) is int or type(v) is float for v in arr.flat):
            try:  # Python ints past int64
                arr = np.asarray(arr, dtype=np.float64)
            except OverflowError:
                raise InvalidInputError(f"{name} holds an integer beyond float64 range") from None
        if arr.dtype.kind not in "iuf":
            raise InvalidInputError(f"{name} must be real numbers, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.ndim != len(shape) or any(
        s not in (-1, a) for s, a in zip(shape, arr.shape, strict=True)
    ):
        want = tuple("n" if s == -1 else s for s in shape)
        raise InvalidInputError(f"{name} has shape {arr.shape}, expected {want}")
    if arr.size and not np.abs(arr).max() <= bound:  # one pass: NaN fails the comparison
        bad_mask = ~(np.abs(arr) <= bound)
        bad = tuple(int(i) for i in np.argwhere(bad_mask)[0])
        where = ", ".join(map(str, bad))
        value = float(arr[bad])
        expected = "a finite number" if not math.isfinite(value) else f"|value| <= {bound:g}"
        raise InvalidInputError(f"{name}[{where}] = {value!r}: expected {expected}")
    return arr


def check_arm_indices(values: Any, n_arms: int, name: str) -> np.ndarray:
    """``values`` as a 1-d int64 array of arm indices in ``[0, n_arms)``, or a typed error
    naming the first bad entries."""
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name} must be a 1-d integer array, got {arr.dtype} {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    bad = (arr < 0) | (arr >= n_arms)
    if bad.any():
        rows = first_rows(bad)
        raise InvalidInputError(
            f"{name} must be arm indices in [0, {n_arms}); first bad entries {rows}: "
            f"{arr[rows].tolist()}"
        )
    return arr


def check_csr(
    cand_ptr: Any, cand_idx: Any, n_arms: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CSR candidate lists checked for shape: ``cand_ptr`` starts at 0, never decreases and
    ends at ``len(cand_idx)``; with ``n_arms``, every request has a candidate and every
    index is in ``[0, n_arms)`` (the decide kernels check activity and duplicates)."""
    ptr = as_index_array(cand_ptr, "cand_ptr")
    idx = as_index_array(cand_idx, "cand_idx")
    if ptr.shape[0] < 1 or ptr[0] != 0 or ptr[-1] != idx.shape[0] or (np.diff(ptr) < 0).any():
        raise InvalidInputError(
            f"cand_ptr must start at 0, be non-decreasing and end at len(cand_idx) = {idx.shape[0]}"
        )
    if n_arms is not None:
        empty = np.diff(ptr) == 0
        if empty.any():
            raise InvalidInputError(
                f"every round needs a candidate; empty rounds {first_rows(empty)}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= n_arms):  # no per-candidate mask
            check_arm_indices(idx, n_arms, "cand_idx")  # when every index is valid
    return ptr, idx
