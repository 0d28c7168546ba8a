"""Log sources for offline evaluation: each turns one log format into :class:`LoggedData`.

:func:`load_foreign_log` reads a CSV or Parquet file through a :class:`ForeignLogConfig`
column mapping; :func:`from_decision_log` converts the allocator's own decision log. Both
validate everything an estimator would otherwise trip over later (propensities outside
(0, 1], missing rewards, arms outside the arm set, candidate lists without the logged arm)
and say where: foreign files by column and 0-based data row, own logs by decision id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from allocator.errors import ConfigError, InvalidInputError, UnknownArmError
from allocator.inputs import invalid_utf8
from allocator.logs import DecisionLog
from allocator.replay.columns import (
    ForeignLogConfig,
    bad_rows,
    candidate_csr,
    encode_categorical,
    epoch_seconds,
    floats,
    labels,
    preview,
    split_candidates,
)
from allocator.replay.dataset import F64, I64, LoggedData
from allocator.replay.estimators import MIN_PSCORE
from allocator.replay.reward_model import check_reward_range

Obj = npt.NDArray[np.object_]
OUTCOMES = ("reward", "click", "order", "gmv")
_SHOWN = 5


def _read_table(path: Path, config: ForeignLogConfig) -> pa.Table:
    """The mapped columns of the file, their text checked to be UTF-8 (neither format's
    reader checks it here: the bad rows are named instead)."""
    roles = config.columns.roles()
    needed = [column for column, _ in roles]
    try:
        if config.file_format == "parquet":
            names = pq.read_schema(path).names
            _check_columns(path, names, roles)
            table = pq.read_table(path, columns=needed)
        else:
            # Every mapped column is read as text and parsed here: ids such as "007" stay
            # text, a timestamp column may mix epoch seconds with ISO-8601, and a bad cell is
            # reported by row even past the first block (from which pyarrow would infer the
            # types).
            convert = pacsv.ConvertOptions(
                column_types=dict.fromkeys(needed, pa.string()),
                null_values=[""],
                strings_can_be_null=True,
                check_utf8=False,
            )
            parse = pacsv.ParseOptions(delimiter=config.delimiter)
            with pacsv.open_csv(path, parse_options=parse, convert_options=convert) as reader:
                names = reader.schema.names
            _check_columns(path, names, roles)
            convert.include_columns = needed
            table = pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowException, OSError) as err:
        raise InvalidInputError(
            f"cannot read {path} as {config.file_format}: {err}".rstrip()
        ) from None
    except UnicodeDecodeError as err:  # a column name (pyarrow decodes names on reading)
        raise InvalidInputError(
            f"cannot read {path} as {config.file_format}: its column name {err.object!r} "
            "is not UTF-8 text"
        ) from None
    for column, role in roles:
        not_utf8 = invalid_utf8(table.column(column))
        if not_utf8 is not None:
            binary = table.column(column).cast(pa.large_binary())
            raise bad_rows(column, role, "text that is not UTF-8", not_utf8, binary)
    if config.decimal != ".":  # "0,25" -> "0.25"
        numeric = config.columns.numeric()
        for column, role in roles:
            if column not in numeric and role != "timestamp":
                continue
            text = table.column(column)
            if column in numeric:  # an ISO timestamp's fraction may hold either mark
                dot = pc.fill_null(pc.match_substring(text, "."), False).to_numpy(
                    zero_copy_only=False
                )
                if dot.any():  # a thousands separator, or a file with decimal points
                    raise bad_rows(column, role, "a '.' in a number read with decimal ','",
                                   dot, text)  # fmt: skip
            dotted = pc.replace_substring(text, ",", ".")
            table = table.set_column(table.schema.get_field_index(column), column, dotted)
    return table


def _check_columns(path: Path, names: list[str], roles: list[tuple[str, str]]) -> None:
    missing = [f"{c!r} ({role})" for c, role in roles if c not in names]
    if missing:
        raise InvalidInputError(
            f"{path} has no column {', '.join(missing)}; its columns are {names}"
        )
    repeated = [f"{c!r} ({role})" for c, role in roles if names.count(c) > 1]
    if repeated:
        raise InvalidInputError(f"{path} has more than one column named {', '.join(repeated)}")


def _arm_groups(arm_ids: tuple[str, ...], groups: dict[str, str] | None) -> tuple[str, ...] | None:
    if groups is None:
        return None
    missing = [a for a in arm_ids if a not in groups]
    extra = [a for a in groups if a not in arm_ids]
    if missing or extra:
        raise InvalidInputError(
            f"groups must name exactly the log's arms {list(arm_ids)}: "
            f"missing {missing}, not arms {extra}"
        )
    return tuple(groups[a] for a in arm_ids)


def load_foreign_log(
    config: ForeignLogConfig, base_dir: Path | None = None, reward_range: Any = None
) -> LoggedData:
    """Read the file of ``config`` (relative paths resolved against ``base_dir``).

    The context matrix holds the numeric ``context`` columns, then each categorical
    column's encoding; ``context_names`` names its columns (``city_tier=t1`` for one-hot).
    Action and candidate ids are whitespace-trimmed. Without ``config.arms`` the arm set is
    every arm id in the action and candidate columns, sorted (reported in ``notes``).
    Rewards outside a declared ``reward_range`` are errors. With a timestamp column the
    rounds are stably sorted by it (errors still name the file's data rows).
    """
    path = config.path if base_dir is None else Path(base_dir) / config.path
    table = _read_table(path, config)
    cols = config.columns
    if table.num_rows == 0:
        raise InvalidInputError(f"{path} has no data rows")

    def raw(column: str) -> pa.ChunkedArray:
        return table.column(column)

    def require(ok: npt.NDArray[np.bool_], column: str, role: str, problem: str) -> None:
        if not ok.all():
            raise bad_rows(column, role, problem, ~ok, raw(column))

    action_text = pc.utf8_trim_whitespace(labels(raw(cols.action), cols.action, "action"))
    filled = pc.utf8_length(action_text).to_numpy(zero_copy_only=False) > 0
    require(filled, cols.action, "action", "blank arm ids")
    listed = (
        None if cols.candidates is None else split_candidates(raw(cols.candidates), cols.candidates)
    )
    arm_ids = config.arms
    if arm_ids is None:
        seen = set(pc.unique(action_text).to_pylist())
        if listed is not None:
            seen.update(pc.unique(listed[1]).to_pylist())
        arm_ids = tuple(sorted(seen))
    arm_array = pa.array(arm_ids, type=pa.string())
    index = pc.index_in(action_text, value_set=arm_array)
    known = pc.is_valid(index).to_numpy(zero_copy_only=False)
    require(known, cols.action, "action", f"arms not in the arm set {preview(list(arm_ids))}")
    actions = index.to_numpy(zero_copy_only=False).astype(np.int64)

    rewards = floats(raw(cols.reward), cols.reward, "reward")
    require(np.isfinite(rewards), cols.reward, "reward", "missing or non-finite values")
    span = check_reward_range(reward_range)
    if span is not None:
        inside = (rewards >= span[0]) & (rewards <= span[1])
        require(inside, cols.reward, "reward", f"values outside the reward_range {list(span)}")
    pscores = floats(raw(cols.propensity), cols.propensity, "propensity")
    in_range = (pscores >= MIN_PSCORE) & (pscores <= 1.0)  # 1 / pscore must be finite
    require(in_range, cols.propensity, "propensity", "values missing or not in (0, 1]")

    blocks: list[F64] = []
    names: list[str] = []
    for j, column in enumerate(cols.context):
        x = floats(raw(column), column, f"context[{j}]")
        require(np.isfinite(x), column, f"context[{j}]", "missing or non-finite values")
        blocks.append(x[:, None])
        names.append(column)
    for column, encoding in cols.categorical.items():
        levels = cols.levels.get(column)
        encoded, encoded_names = encode_categorical(raw(column), column, encoding, levels)
        blocks.append(encoded)
        names.extend(encoded_names)

    positions = None
    rows = None
    if cols.position is not None:
        p = floats(raw(cols.position), cols.position, "position")
        whole = np.isfinite(p) & (p >= 0) & (p == np.floor(p))
        require(whole, cols.position, "position", "values missing or not integers >= 0")
        positions = p.astype(np.int64)
        rows = _position_rows(positions, config.keep_position, cols.position)
    attrs = {
        name: pc.utf8_trim_whitespace(labels(raw(column), column, f"attrs[{name}]"))
        .to_numpy(zero_copy_only=False)
        .astype(np.str_)
        for name, column in cols.attrs.items()
    }
    cand_ptr = cand_idx = None
    if cols.candidates is not None and listed is not None:
        cand_ptr, cand_idx = candidate_csr(
            listed, raw(cols.candidates), cols.candidates, arm_array, actions, cols.action
        )
    notes: tuple[str, ...] = ()
    if config.arms is None:
        where = f"column {cols.action!r}" + ("" if listed is None else " and the candidates")
        notes = (
            f"arms not declared: the {len(arm_ids)} ids in {where} became the arm set, "
            f"first {list(arm_ids[:_SHOWN])} (declare logs.foreign.arms to refuse others)",
        )
    data = LoggedData(
        arm_ids=arm_ids,
        actions=actions,
        rewards=rewards,
        pscores=pscores,
        arm_groups=_arm_groups(arm_ids, config.groups),
        contexts=np.ascontiguousarray(np.hstack(blocks)) if blocks else None,
        context_names=tuple(names),
        timestamps=None
        if cols.timestamp is None
        else epoch_seconds(raw(cols.timestamp), cols.timestamp, "timestamp"),
        positions=positions,
        cand_ptr=cand_ptr,
        cand_idx=cand_idx,
        attrs=attrs or None,
        notes=notes,
        source_rows=np.arange(table.num_rows, dtype=np.int64),
        source_size=table.num_rows,
    )
    if rows is not None:
        data = data.select(rows)
    return data.in_time_order(f"column {cols.timestamp!r}")


def _position_rows(positions: I64, keep: int | None, column: str) -> I64 | None:
    """The rows of position ``keep``; a log with several positions needs one picked."""
    held = np.unique(positions)
    if keep is None:
        if held.size > 1:
            raise InvalidInputError(
                f"column {column!r} (position) holds {held.size} positions "
                f"{held[:_SHOWN].tolist()}: several items were shown per impression (a "
                "slate), and replay scores one choice per round. Set logs.foreign."
                "keep_position to evaluate one position's rows (their propensities are "
                "that position's), or map no position column"
            )
        return None
    rows = np.flatnonzero(positions == keep)
    if rows.size == 0:
        raise InvalidInputError(
            f"column {column!r} (position): no row holds keep_position {keep}; it holds "
            f"{held[:_SHOWN].tolist()}"
        )
    return rows


def _first_ids(ids: Obj, mask: npt.NDArray[np.bool_]) -> str:
    rows = np.flatnonzero(mask)
    shown = ids[rows[:_SHOWN]].tolist()
    return f"{len(rows)} decision{'s' if len(rows) != 1 else ''}, first {shown}"


def _index_of(values: Obj, arm_ids: pa.Array) -> tuple[I64, npt.NDArray[np.bool_]]:
    index = pc.index_in(pa.array(values, type=pa.string()), value_set=arm_ids)
    unknown = pc.is_null(index).to_numpy(zero_copy_only=False)
    return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64), unknown


def _arm_set(arm_ids: Sequence[str]) -> tuple[str, ...]:
    if isinstance(arm_ids, str) or not all(isinstance(a, str) and a for a in arm_ids):
        raise InvalidInputError(f"arm_ids = {arm_ids!r}: expected a sequence of non-empty strings")
    arms = tuple(arm_ids)
    repeated = sorted({a for a in arms if arms.count(a) > 1})
    if repeated:
        raise InvalidInputError(f"arm_ids repeats {repeated}")
    return arms


def _groups_of(log: DecisionLog, arm_ids: tuple[str, ...]) -> tuple[str, ...] | None:
    """Each arm's group as logged when it was chosen; None if an arm was never chosen."""
    pairs = (
        pa.table({"arm": log.arm_id, "group": log.group}).group_by(["arm", "group"]).aggregate([])
    )
    arms, groups = pairs.column("arm").to_pylist(), pairs.column("group").to_pylist()
    of: dict[str, str] = {}
    for arm, group in zip(arms, groups, strict=True):
        if arm in of:
            raise InvalidInputError(f"arm {arm!r} is logged in groups {of[arm]!r} and {group!r}")
        of[arm] = group
    if any(a not in of for a in arm_ids):
        return None
    return tuple(of[a] for a in arm_ids)


def from_decision_log(
    log: DecisionLog,
    reward: str = "reward",
    missing: Literal["error", "drop"] = "error",
    arm_ids: Sequence[str] | None = None,
    reward_range: Any = None,
) -> LoggedData:
    """The allocator's own log as LoggedData, with its full candidate distributions.

    ``reward`` picks the outcome column (``reward`` is the objective the policy learned).
    Decisions without an outcome are an error, or left out with ``missing="drop"``.
    Without ``arm_ids`` the arm set is every chosen or candidate arm, sorted. Arm groups
    are those logged with each arm; ``arm_groups`` is None if some arm was never chosen
    (its group is not in the log). Timestamps and request attributes come along (what a
    constrained policy's contracts read when it is replayed); rounds are in time order, and
    each keeps its events (click, order, gmv) in ``outcomes``. Outcomes outside a declared
    ``reward_range`` are errors.
    """
    if reward not in OUTCOMES:
        raise InvalidInputError(f"reward = {reward!r}: expected one of {list(OUTCOMES)}")
    if missing not in ("error", "drop"):
        raise InvalidInputError(f"missing = {missing!r}: expected 'error' or 'drop'")
    outcome = getattr(log, reward)
    absent = np.isnan(outcome)
    if absent.any() and missing == "error":
        raise InvalidInputError(
            f"{_first_ids(log.decision_id, absent)} have no outcome ({reward} is NaN); "
            "pass missing='drop' to leave them out"
        )
    span = check_reward_range(reward_range)
    if span is not None:
        outside = ~absent & ((outcome < span[0]) | (outcome > span[1]))
        if outside.any():
            raise InvalidInputError(
                f"{_first_ids(log.decision_id, outside)} have {reward} outside the "
                f"reward_range {list(span)}: {outcome[outside][:_SHOWN].tolist()}"
            )
    keep = ~absent
    if not keep.any():
        raise InvalidInputError(
            f"the decision log has no decision with an outcome ({len(log)} rows)"
        )
    lengths = np.diff(log.cand_ptr)
    keep_flat = np.repeat(keep, lengths)
    cand_ids = log.cand_ids[keep_flat]

    if arm_ids is None:
        chosen_or_listed = pa.array(np.concatenate([log.arm_id[keep], cand_ids]), pa.string())
        arms = tuple(sorted(pc.unique(chosen_or_listed).to_pylist()))
    else:
        arms = _arm_set(arm_ids)
    arm_array = pa.array(arms, type=pa.string())
    ids = log.decision_id[keep]
    actions, outside = _index_of(log.arm_id[keep], arm_array)
    if outside.any():
        raise InvalidInputError(
            f"{_first_ids(ids, outside)} chose arms not in arm_ids {preview(list(arms))}"
        )
    cand_idx, unknown = _index_of(cand_ids, arm_array)
    if unknown.any():
        rows = np.zeros(len(ids), dtype=bool)
        rows[np.repeat(np.arange(len(ids)), lengths[keep])[unknown]] = True
        raise InvalidInputError(
            f"{_first_ids(ids, rows)} have candidates not in arm_ids {preview(list(arms))}"
        )

    contexts = None
    if log.context is not None:
        contexts = np.ascontiguousarray(log.context[keep])
        without = np.isnan(contexts).any(axis=1)
        if without.any():
            raise InvalidInputError(
                f"{_first_ids(ids, without)} were logged without a context while others have one"
            )
    cand_ptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths[keep], out=cand_ptr[1:])
    # the events every outcome row carries (a factored policy learns them, not the reward)
    events = np.ascontiguousarray(np.stack([log.click, log.order, log.gmv], axis=1)[keep])
    kept = [a for a, k in zip(log.attrs, keep.tolist(), strict=True) if k]
    names = sorted(set().union(*kept)) if kept else []
    attrs = {name: np.array([a.get(name, "") for a in kept], dtype=np.str_) for name in names}
    return LoggedData(
        arm_ids=arms,
        actions=actions,
        rewards=np.ascontiguousarray(outcome[keep]),
        pscores=np.ascontiguousarray(log.propensity[keep]),
        arm_groups=_groups_of(log, arms),
        contexts=contexts,
        timestamps=np.ascontiguousarray(log.timestamp[keep]),
        cand_ptr=cand_ptr,
        cand_idx=cand_idx,
        cand_prob=np.ascontiguousarray(log.cand_prob[keep_flat]),
        attrs=attrs,
        outcomes=events if np.isfinite(events).all() else None,
    ).in_time_order()


def with_catalogue(data: LoggedData, path: str | Path, with_features: bool) -> LoggedData:
    """``data`` with its arms' groups (and, ``with_features``, features) from the catalogue
    file ``path`` (``id``, ``group``, ``features``: :mod:`allocator.arms_file`); an arm of
    the log missing from the catalogue is a :class:`ConfigError` naming it."""
    from allocator.arms_file import read_catalogue

    catalogue = read_catalogue(path, with_features)
    try:
        rows = catalogue.registry.lookup(list(data.arm_ids))
    except (InvalidInputError, UnknownArmError) as err:
        raise ConfigError(
            f"arms file {path}: the log's arms are not all in it ({err.args[0]})"
        ) from None
    groups = catalogue.registry.groups
    codes = catalogue.registry.arm_group[rows]
    feats = None if catalogue.features is None else np.ascontiguousarray(catalogue.features[rows])
    return dataclasses.replace(
        data, arm_groups=tuple(groups[c] for c in codes.tolist()), arm_features=feats
    )
