"""An arm catalogue from a Parquet or Arrow IPC file, checked column by column.

A config lists its arms inline (one validated object per arm: fine for thousands) or names
an ``arms_file`` for catalogues of millions. The file holds one row per arm: ``id`` (string,
or integer: the id is its decimal spelling), ``group`` (string) and, for the families
that weigh arm features, ``features`` (a list of floats of the configured width); only
the columns the policy uses are read. Each check is a vectorised pass over a column (repeated
ids are found by the registry's compiled insert, which builds the id table in the same
pass); a failing check names the column and the first offending rows, and nothing is built
from a file that fails one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from allocator.errors import ConfigError, InvalidInputError
from allocator.inputs import first_rows, invalid_utf8
from allocator.registry import ArmRegistry

#: the pattern and length bounds of an inline arm's id and group (``ArmSpec``)
GROUP_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_ID_LENGTH = 256
#: Largest arms file read (about 40 bytes an arm without features: 10^7 arms fit).
MAX_ARMS_FILE_BYTES = 4 << 30


@dataclass(frozen=True)
class ArmColumns:
    """A checked catalogue: its registry (every arm active, groups in the declared order)
    and its (n, w) float64 arm features, or None."""

    registry: ArmRegistry
    features: np.ndarray | None


def _fail(path: Path, text: str) -> ConfigError:
    return ConfigError(f"arms file {path}: {text}")


def _rows(mask: np.ndarray) -> str:
    rows = first_rows(mask)
    more = int(mask.sum()) - len(rows)
    return f"rows {rows}" + (f" and {more} more" if more > 0 else "")


def _read(path: Path, wanted: Sequence[str]) -> pa.Table:
    """The ``wanted`` columns of the file (a column the policy does not use is not read)."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise _fail(path, f"cannot be read ({err.strerror})") from None
    if size > MAX_ARMS_FILE_BYTES:
        raise _fail(path, f"is {size:,} bytes, over the {MAX_ARMS_FILE_BYTES:,} bound")
    try:
        with path.open("rb") as f:
            magic = f.read(6)
        if magic[:4] == b"PAR1":
            names = pq.read_schema(path).names
            _require(path, names, wanted)
            return pq.read_table(path, columns=list(wanted))
        if magic == b"ARROW1":
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            _require(path, table.column_names, wanted)
            table = table.select(list(wanted))
            # the mapped buffers are used as they are: an offset past its buffer (one
            # flipped byte) would have the compute kernels read outside the map
            table.validate(full=True)
            return table
    except (pa.ArrowException, OSError, ValueError) as err:
        raise _fail(path, f"is not a readable Parquet or Arrow file ({err})") from None
    raise _fail(path, "is neither a Parquet file nor an Arrow IPC file")


def _require(path: Path, names: Sequence[str], wanted: Sequence[str]) -> None:
    for name in wanted:
        if name not in names:
            raise _fail(path, f"column {name!r} is missing (columns: {list(names)})")


def _column(table: pa.Table, path: Path, name: str) -> pa.ChunkedArray:
    col = table.column(name)
    if col.null_count:
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        raise _fail(path, f"column {name!r} is empty at {_rows(nulls)}")
    not_utf8 = invalid_utf8(col)
    if not_utf8 is not None:
        raise _fail(path, f"column {name!r} holds text that is not UTF-8 at {_rows(not_utf8)}")
    return col


def _ids(table: pa.Table, path: Path) -> pa.ChunkedArray:
    col = _column(table, path, "id")
    if pa.types.is_integer(col.type) or pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
    elif not pa.types.is_string(col.type):
        raise _fail(path, f"column 'id' must hold strings or integers, got {col.type}")
    lengths = pc.utf8_length(col).to_numpy()
    bad = (lengths == 0) | (lengths > MAX_ID_LENGTH)
    if bad.any():
        raise _fail(
            path, f"column 'id' is empty or over {MAX_ID_LENGTH} characters at {_rows(bad)}"
        )
    nul = pc.match_substring(col, "\x00").to_numpy(zero_copy_only=False)
    if nul.any():
        raise _fail(path, f"column 'id' holds a NUL character at {_rows(nul)}")
    return col


def _repeats(col: pa.ChunkedArray, path: Path, err: InvalidInputError) -> ConfigError:
    """The error naming the first repeated ids and their rows (only run on failure: the
    registry's compiled insert finds repeats in the same pass that builds the table), or
    the registry's ``err`` if no id repeats."""
    counts = pc.value_counts(col)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return _fail(path, str(err))
    first = repeated[:3]
    rows = pc.is_in(col, value_set=first).to_numpy(zero_copy_only=False)
    return _fail(path, f"column 'id' repeats ids {first.to_pylist()} at {_rows(rows)}")


def _group_column(table: pa.Table, path: Path) -> pa.ChunkedArray:
    col = _column(table, path, "group")
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise _fail(path, f"column 'group' must hold strings, got {col.type}")
    return col


def _groups(table: pa.Table, path: Path, declared: Sequence[str]) -> np.ndarray:
    col = _group_column(table, path)
    encoded = pc.index_in(col, value_set=pa.array(list(declared), pa.string()))
    codes = encoded.to_numpy(zero_copy_only=False)
    unknown = encoded.is_null().to_numpy(zero_copy_only=False)
    if unknown.any():
        raise _bad_groups(col, unknown, path, f"not among arms_file.groups {list(declared)}")
    return np.ascontiguousarray(codes, dtype=np.int64)


def _bad_groups(col: pa.ChunkedArray, bad: np.ndarray, path: Path, problem: str) -> ConfigError:
    """The error naming the first groups of the ``bad`` rows, and the rows."""
    names = sorted(set(pc.filter(col, pa.array(bad)).unique().to_pylist()))[:5]
    return _fail(path, f"column 'group' names groups {names} {problem} at {_rows(bad)}")


def _features(table: pa.Table, path: Path, width: int) -> np.ndarray:
    col = _column(table, path, "features")
    if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type)) or not (
        pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type)
    ):
        raise _fail(path, f"column 'features' must hold lists of numbers, got {col.type}")
    col = col.combine_chunks()
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    bad = lengths != width
    if bad.any():
        raise _fail(path, f"column 'features' must hold {width} values a row: {_rows(bad)}")
    values = pc.list_flatten(col)
    if values.null_count:
        raise _fail(path, f"column 'features' holds empty values at {_rows(_row_nulls(col))}")
    feats = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    feats = feats.reshape(len(col), width)
    infinite = ~np.isfinite(feats).all(axis=1)
    if infinite.any():
        raise _fail(path, f"column 'features' holds NaN or inf at {_rows(np.asarray(infinite))}")
    return np.ascontiguousarray(feats)


def _row_nulls(col: pa.Array) -> np.ndarray:
    parents = pc.list_parent_indices(col).to_numpy()
    nulls = pc.list_flatten(col).is_null().to_numpy(zero_copy_only=False)
    out = np.zeros(len(col), dtype=bool)
    out[parents[nulls]] = True
    return out


def read_arms_file(
    path: str | Path, groups: Sequence[str], feature_width: int | None
) -> ArmColumns:
    """The catalogue in ``path``: every row's group among ``groups``, features of
    ``feature_width`` values when the policy weighs arm features (else the column, if
    present, is ignored). Raises :class:`ConfigError` naming the column and rows."""
    path = Path(path)
    table = _read(path, ("id", "group") if feature_width is None else ("id", "group", "features"))
    if table.num_rows == 0:
        raise _fail(path, "holds no arms")
    ids = _ids(table, path)
    codes = _groups(table, path, groups)
    feats = None if feature_width is None else _features(table, path, feature_width)
    del table
    try:  # ids are non-empty, NUL-free and UTF-8 by now: a refusal is a repeated id
        registry = ArmRegistry.from_columns(
            np.asarray(ids.to_numpy(zero_copy_only=False), dtype=str), list(groups), codes
        )
    except InvalidInputError as err:
        raise _repeats(ids, path, err) from None
    return ArmColumns(registry, feats)


def read_catalogue(path: str | Path, with_features: bool) -> ArmColumns:
    """The catalogue in ``path`` with the groups it names (in order of first appearance) and,
    when ``with_features``, its features at the width of its first row (every row must
    match it): what a replay reads to give a log's arms their groups and features."""
    path = Path(path)
    table = _read(path, ("group", "features") if with_features else ("group",))
    col = _group_column(table, path)
    named = pc.match_substring_regex(col, GROUP_PATTERN.pattern).to_numpy(zero_copy_only=False)
    if not named.all():
        raise _bad_groups(col, ~named, path, f"that do not match {GROUP_PATTERN.pattern}")
    groups = list(dict.fromkeys(pc.unique(col).to_pylist()))
    width = None
    if with_features:
        first = _column(table, path, "features")
        if first.length() == 0 or not hasattr(first.type, "value_type"):
            raise _fail(path, f"column 'features' must hold lists of numbers, got {first.type}")
        # the first row, wherever it lies (a table's first chunk may be empty)
        width = int(pc.list_value_length(first.slice(0, 1)).to_numpy()[0])
    del table
    return read_arms_file(path, groups, width)
