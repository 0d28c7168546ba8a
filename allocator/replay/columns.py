"""Column mapping of a foreign log file, and the typed reading of its columns.

A foreign log (another team's CSV export, a Parquet dump) names its columns as it likes;
:class:`ForeignLogConfig` says which column holds what, and the helpers below turn one
Arrow column into numbers, epoch seconds, arm ids or a categorical encoding. Every bad value
is reported with its column, its role and the first offending *data rows*: 0-based row
numbers of the data, header excluded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ConfigDict, Field, model_validator

from allocator.config import GroupName, StrictModel
from allocator.errors import InvalidInputError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

ColumnName = Annotated[str, Field(min_length=1)]
Label = Annotated[str, Field(min_length=1)]
Encoding = Literal["one_hot", "index"]
Format = Literal["csv", "parquet"]
FORMATS: Final[dict[str, Format]] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

_SHOWN = 5
#: Most levels a one_hot column may have: its encoding is an (n, levels) float matrix (a
#: column of 40,000 distinct ids over 40,000 rows: 12.8 GB); encode such columns as index.
MAX_ONE_HOT_LEVELS: Final = 1_000
#: Integers beyond this magnitude are not all exact in float64 (2**53 + 1 is not).
_EXACT_INT: Final = 2**53
_NUMBER = r"(?i)^[+-]?((\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"
_ISO_WITH_ZONE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)$"
_SECOND: Final = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def _distinct(name: str, values: tuple[str, ...]) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} repeats {repeated}")


class ColumnMap(StrictModel):
    """Which file column plays which role; ``context`` and ``categorical`` may be empty.

    ``categorical`` maps a column to its encoding, in context order: ``one_hot`` adds one
    0/1 column per level (at most :data:`MAX_ONE_HOT_LEVELS`: a column of ids is encoded as
    ``index``), ``index`` one column holding the level's index. Levels are the column's
    distinct values sorted as strings, unless ``levels`` fixes them (then any other value
    is an error). ``attrs`` maps a request attribute to the column holding it (text,
    trimmed), for the scopes of a replayed policy's contracts.
    """

    model_config = ConfigDict(coerce_numbers_to_str=True)

    action: ColumnName
    reward: ColumnName
    propensity: ColumnName
    position: ColumnName | None = None
    timestamp: ColumnName | None = None
    context: tuple[ColumnName, ...] = ()
    categorical: dict[ColumnName, Encoding] = Field(default_factory=dict)
    levels: dict[ColumnName, tuple[Label, ...]] = Field(default_factory=dict)
    candidates: ColumnName | None = None
    #: request attribute name -> column (what contract scopes read, e.g. category)
    attrs: dict[Label, ColumnName] = Field(default_factory=dict)

    def numeric(self) -> list[str]:
        """The columns read as plain numbers (what a decimal mark applies to)."""
        return [self.reward, self.propensity, *self.context] + (
            [] if self.position is None else [self.position]
        )

    def roles(self) -> list[tuple[str, str]]:
        """``(column, role)`` of every mapped column, in context order."""
        out = [(self.action, "action"), (self.reward, "reward"), (self.propensity, "propensity")]
        for role in ("position", "timestamp", "candidates"):
            if (column := getattr(self, role)) is not None:
                out.append((column, role))
        out += [(c, f"context[{j}]") for j, c in enumerate(self.context)]
        out += [(c, f"categorical {enc}") for c, enc in self.categorical.items()]
        out += [(c, f"attrs[{name}]") for name, c in self.attrs.items()]
        return out

    @model_validator(mode="after")
    def _each_column_once(self) -> ColumnMap:
        seen: dict[str, str] = {}
        for column, role in self.roles():
            if column in seen:
                raise ValueError(f"column {column!r} is mapped twice: as {seen[column]} and {role}")
            seen[column] = role
        return self

    @model_validator(mode="after")
    def _levels_of_categoricals(self) -> ColumnMap:
        for column, levels in self.levels.items():
            if column not in self.categorical:
                raise ValueError(
                    f"levels given for {column!r}, which is not one of the categorical "
                    f"columns {list(self.categorical)}"
                )
            if not levels:
                raise ValueError(f"levels of {column!r} is empty")
            _distinct(f"levels of {column!r}", levels)
        return self


class ForeignLogConfig(StrictModel):
    """A foreign log file, its column mapping, and optionally its arm set and arm groups.

    ``format`` is inferred from the suffix (``.csv``, ``.parquet``, ``.pq``) unless given.
    Without ``arms`` the arm set is every arm id the file mentions, sorted; with it, any
    other arm id in the file is an error. ``groups`` must then name exactly the arms. A
    position column with several positions (a slate log) is refused unless
    ``keep_position`` picks the rows of one position, whose propensities are that
    position's.
    """

    model_config = ConfigDict(coerce_numbers_to_str=True)

    path: Path
    format: Format | None = None
    columns: ColumnMap
    arms: Annotated[tuple[Label, ...], Field(min_length=1)] | None = None
    groups: dict[Label, GroupName] | None = None
    #: evaluate the rows of this position only (a slate log's per-position propensities)
    keep_position: Annotated[int, Field(ge=0)] | None = None
    #: CSV only: the field separator (one printable ASCII character or a tab, e.g. ``;``)
    delimiter: str = ","
    #: CSV only: the decimal mark of the reward, propensity, position, context and
    #: timestamp columns (``","`` for files written with a decimal comma, which then need
    #: another delimiter; a ``.`` in a number of the first four, e.g. a thousands separator,
    #: is an error; a timestamp may hold either mark, as ISO fractions do)
    decimal: Literal[".", ","] = "."

    @property
    def file_format(self) -> Format:
        return self.format or FORMATS[self.path.suffix.lower()]

    @model_validator(mode="after")
    def _known_format(self) -> ForeignLogConfig:
        if self.format is None and self.path.suffix.lower() not in FORMATS:
            raise ValueError(
                f"path {str(self.path)!r} has suffix {self.path.suffix!r}: name a "
                f"{'/'.join(FORMATS)} file or set format to csv or parquet"
            )
        return self

    @model_validator(mode="after")
    def _csv_dialect(self) -> ForeignLogConfig:
        if (self.delimiter, self.decimal) != (",", ".") and self.file_format != "csv":
            raise ValueError("delimiter and decimal apply to CSV files only")
        d = self.delimiter
        if len(d) != 1 or not (" " <= d <= "~" or d == "\t") or d == '"':
            raise ValueError(
                f"delimiter = {d!r}: expected one printable ASCII character or a tab, other "
                "than a quote"
            )
        if self.delimiter == self.decimal:
            raise ValueError(
                f"delimiter and decimal are both {self.delimiter!r}: a file with a decimal "
                "comma separates its fields with another character (often ';')"
            )
        return self

    @model_validator(mode="after")
    def _position_to_keep(self) -> ForeignLogConfig:
        if self.keep_position is not None and self.columns.position is None:
            raise ValueError("keep_position needs a position column (columns.position)")
        return self

    @model_validator(mode="after")
    def _groups_of_the_arms(self) -> ForeignLogConfig:
        if self.arms is None:
            return self
        _distinct("arms", self.arms)
        if self.groups is not None:
            missing = [a for a in self.arms if a not in self.groups]
            extra = [a for a in self.groups if a not in self.arms]
            if missing or extra:
                raise ValueError(
                    f"groups must name exactly the arms: missing {missing}, not arms {extra}"
                )
        return self


def bad_rows(
    column: str, role: str, problem: str, mask: Mask, values: pa.ChunkedArray
) -> Exception:
    """The error for the rows of ``mask``: the column, its role, the first rows and values."""
    rows = np.flatnonzero(mask)
    first = rows[:_SHOWN]
    shown = values.take(pa.array(first, type=pa.int64())).to_pylist()
    more = ", ..." if len(rows) > _SHOWN else ""
    count = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
    return InvalidInputError(
        f"column {column!r} ({role}): {problem} in {count}; first data rows (0-based) "
        f"[{', '.join(map(str, first.tolist()))}{more}] hold {shown}"
    )


def preview(items: list[str], limit: int = 10) -> str:
    """``items`` for a message, cut after ``limit`` (an arm set may have thousands)."""
    return str(items) if len(items) <= limit else f"{str(items[:limit])[:-1]}, ...]"


def _wrong_type(column: str, role: str, type_: pa.DataType, expected: str) -> Exception:
    return InvalidInputError(f"column {column!r} ({role}) has type {type_}, expected {expected}")


def _is_text(type_: pa.DataType) -> bool:
    return bool(pa.types.is_string(type_) or pa.types.is_large_string(type_))


def _numeric_text(values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, Mask, Mask]:
    """Trimmed strings, which of them are numbers, and which are present but not numbers."""
    trimmed = pc.utf8_trim_whitespace(values)
    number = pc.fill_null(pc.match_substring_regex(trimmed, _NUMBER), False)
    is_number = number.to_numpy(zero_copy_only=False)
    present = pc.is_valid(values).to_numpy(zero_copy_only=False)
    return trimmed, is_number, present & ~is_number


def floats(values: pa.ChunkedArray, column: str, role: str) -> F64:
    """Numbers of a numeric (or numeric text) column; NaN where a cell is empty."""
    t = values.type
    if pa.types.is_null(t):
        return np.full(len(values), np.nan)
    if _is_text(t):
        trimmed, _, not_number = _numeric_text(values)
        if not_number.any():
            raise bad_rows(column, role, "values that are not numbers", not_number, values)
        values = trimmed
    elif pa.types.is_integer(t):
        ints = pc.fill_null(values, 0).to_numpy()
        inexact = (ints > _EXACT_INT) | (ints < -_EXACT_INT)
        if inexact.any():
            problem = "integers beyond ±2**53, which float64 does not hold exactly"
            raise bad_rows(column, role, problem, inexact, values)
    elif not (pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)):
        raise _wrong_type(column, role, t, "numbers")
    number = pc.fill_null(pc.cast(values, pa.float64()), np.nan)
    return np.ascontiguousarray(number.to_numpy(zero_copy_only=False), dtype=np.float64)


def labels(values: pa.ChunkedArray, column: str, role: str) -> pa.ChunkedArray:
    """String labels (arm ids, levels) of a string or integer column; empty cells are errors."""
    t = values.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (_is_text(t) or pa.types.is_integer(t)):
        raise _wrong_type(column, role, values.type, "strings or integers")
    out = pc.cast(values, pa.string())
    if out.null_count:
        raise bad_rows(column, role, "missing values", pc.is_null(out).to_numpy(), values)
    return out


def epoch_seconds(values: pa.ChunkedArray, column: str, role: str) -> F64:
    """Epoch seconds of numbers, zoned timestamps, or text holding either (ISO-8601 + zone)."""
    t = values.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise InvalidInputError(
                f"column {column!r} ({role}) holds timestamps without a timezone; "
                "expected epoch seconds or ISO-8601 with a zone offset"
            )
        # nanosecond ticks of today are past 2**53: the rounding (under a microsecond) is
        # no error here
        ticks = pc.cast(pc.cast(values, pa.int64()), pa.float64(), safe=False)
        out = pc.fill_null(ticks, np.nan).to_numpy(zero_copy_only=False) / _SECOND[t.unit]
    elif _is_text(t):
        trimmed, is_number, _ = _numeric_text(values)
        iso = pc.fill_null(pc.match_substring_regex(trimmed, _ISO_WITH_ZONE), False).to_numpy(
            zero_copy_only=False
        )
        unparsable = pc.is_valid(values).to_numpy(zero_copy_only=False) & ~is_number & ~iso
        if unparsable.any():
            expected = "epoch seconds or ISO-8601 with a zone offset"
            raise bad_rows(column, role, f"values that are not {expected}", unparsable, values)
        out = np.full(len(values), np.nan)
        out[is_number] = pc.cast(trimmed.filter(pa.array(is_number)), pa.float64()).to_numpy()
        out[iso] = _parse_iso(trimmed, iso, column, role, values)
    else:
        out = floats(values, column, role)
    missing = ~np.isfinite(out)
    if missing.any():
        raise bad_rows(column, role, "missing or non-finite values", missing, values)
    return np.ascontiguousarray(out)


def _parse_iso(
    trimmed: pa.ChunkedArray, iso: Mask, column: str, role: str, raw: pa.ChunkedArray
) -> F64:
    subset = trimmed.filter(pa.array(iso))
    try:
        micros = _iso_micros(subset)
    except pa.ArrowInvalid:  # well-formed but impossible (month 13): find those rows
        invalid = np.zeros(len(iso), dtype=bool)
        for row in np.flatnonzero(iso):
            try:
                _iso_micros(pa.array([trimmed[int(row)].as_py()], pa.string()))
            except pa.ArrowInvalid:
                invalid[row] = True
        raise bad_rows(column, role, "impossible dates", invalid, raw) from None
    return micros.to_numpy().astype(np.float64) / 1e6


def _iso_micros(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Microseconds since the epoch of zoned ISO-8601 texts. A fraction of 7 to 9 digits
    (pandas writes nanoseconds) is read at nanosecond precision, within the years that
    holds (1677-2262), and cut to the microsecond."""
    try:
        return pc.cast(pc.cast(values, pa.timestamp("us", tz="UTC")), pa.int64())
    except pa.ArrowInvalid:
        nanos = pc.cast(pc.cast(values, pa.timestamp("ns", tz="UTC")), pa.int64())
        return pc.divide(nanos, 1000)  # integer division: toward 0, under a microsecond


def encode_categorical(
    values: pa.ChunkedArray, column: str, encoding: Encoding, levels: tuple[str, ...] | None
) -> tuple[F64, tuple[str, ...]]:
    """``(n, L)`` one-hot or ``(n, 1)`` level-index encoding of a column, with column names."""
    text = labels(values, column, f"categorical {encoding}")
    if levels is None:
        levels = tuple(sorted(pc.unique(text).to_pylist()))
    if encoding == "one_hot" and len(levels) > MAX_ONE_HOT_LEVELS:
        raise InvalidInputError(
            f"column {column!r} (categorical one_hot) has {len(levels):,} levels, over the "
            f"{MAX_ONE_HOT_LEVELS:,} a one-hot encoding takes (a float column per level): "
            "encode it as index, or fix fewer levels in columns.levels"
        )
    index = pc.index_in(text, value_set=pa.array(levels, type=pa.string()))
    unknown = pc.is_null(index).to_numpy(zero_copy_only=False)
    if unknown.any():
        role = f"categorical {encoding}"
        raise bad_rows(column, role, f"levels not in {list(levels)}", unknown, values)
    idx = index.to_numpy(zero_copy_only=False).astype(np.int64)
    if encoding == "index":
        return idx.astype(np.float64)[:, None], (column,)
    out = np.zeros((len(idx), len(levels)))
    out[np.arange(len(idx)), idx] = 1.0
    return out, tuple(f"{column}={level}" for level in levels)


def split_candidates(values: pa.ChunkedArray, column: str) -> tuple[I64, pa.ChunkedArray]:
    """Lengths ``(n,)`` and concatenated, trimmed ids of ``;``-separated candidate lists;
    a blank id (``"a;"``, ``" ;a"``) is an error."""
    lists = pc.split_pattern(labels(values, column, "candidates"), ";")
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    ids = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    blank = pc.equal(pc.utf8_length(ids), 0).to_numpy(zero_copy_only=False)
    if blank.any():
        raise bad_rows(column, "candidates", "blank arm ids", _rows_of(lengths, blank), values)
    return lengths, ids


def _rows_of(lengths: I64, flat: Mask) -> Mask:
    """The rows of lists of ``lengths`` holding an entry of the concatenated ``flat`` mask."""
    out = np.zeros(len(lengths), dtype=bool)
    out[np.repeat(np.arange(len(lengths)), lengths)[flat]] = True
    return out


def candidate_csr(
    listed: tuple[I64, pa.ChunkedArray],
    values: pa.ChunkedArray,
    column: str,
    arm_ids: pa.Array,
    actions: I64,
    action_column: str,
) -> tuple[I64, I64]:
    """CSR ``(cand_ptr, cand_idx)`` of split candidate lists (raw ``values`` for messages).

    Each list must name known arms, each once, and hold its round's logged action.
    """
    lengths, flat = listed
    index = pc.index_in(flat, value_set=arm_ids)
    n = len(actions)
    row_of = np.repeat(np.arange(n), lengths)
    unknown = _rows_of(lengths, pc.is_null(index).to_numpy(zero_copy_only=False))
    if unknown.any():
        problem = f"arms not in the arm set {preview(arm_ids.to_pylist())}"
        raise bad_rows(column, "candidates", problem, unknown, values)
    idx = index.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((idx, row_of))
    twice = np.zeros(len(idx), dtype=bool)
    twice[order[1:]] = (np.diff(row_of[order]) == 0) & (np.diff(idx[order]) == 0)
    if twice.any():
        raise bad_rows(
            column, "candidates", "an arm listed twice", _rows_of(lengths, twice), values
        )
    without = np.bincount(row_of, weights=idx == actions[row_of], minlength=n) == 0
    if without.any():
        problem = f"lists without the logged action (column {action_column!r})"
        raise bad_rows(column, "candidates", problem, without, values)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    return ptr, idx
