"""Log sources: foreign CSV / Parquet through a column mapping, and the allocator's own log."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from allocator.errors import InvalidInputError
from allocator.logs import DecisionLogWriter, load_decision_log
from allocator.replay import ForeignLogConfig, LoggedData, from_decision_log, load_foreign_log
from allocator.replay.columns import MAX_ONE_HOT_LEVELS
from tests.logs.helpers import decision, outcome

CSV = """\
arm,reward,pscore,slot,ts,age,income,city_tier,category,cands
taobao,1,0.5,0,2024-01-01T00:00:00Z,30,1000.5,t2,shoes,taobao;douyin
douyin,0,0.25,0,1704067260,41,2000,t1,bags,taobao; douyin;jd
jd,0.5,1.0,0,2024-01-01T01:02:00+01:00,25,0,t3,shoes,jd
taobao,2.5,0.1,0,1704067200.5,52,-3.5,t1,hats,douyin;taobao
"""
#: the file's rows in time order (the last row is 0.5 s after the first)
TIME_ORDER = [0, 3, 1, 2]
HEADER, *ROWS = [line.split(",") for line in CSV.splitlines()]
MAPPING = {
    "action": "arm",
    "reward": "reward",
    "propensity": "pscore",
    "position": "slot",
    "timestamp": "ts",
    "context": ["age", "income"],
    "categorical": {"city_tier": "one_hot", "category": "index"},
    "levels": {"city_tier": ["t1", "t2", "t3"]},
    "candidates": "cands",
}
GROUPS = {"taobao": "taobao", "douyin": "partner", "jd": "partner"}

EXPECTED = {
    "arm_ids": ("douyin", "jd", "taobao"),
    "arm_groups": ("partner", "partner", "taobao"),
    "actions": [2, 2, 0, 1],
    "rewards": [1.0, 2.5, 0.0, 0.5],
    "pscores": [0.5, 0.1, 0.25, 1.0],
    "positions": [0, 0, 0, 0],
    "timestamps": [1704067200.0, 1704067200.5, 1704067260.0, 1704067320.0],
    "contexts": [
        [30, 1000.5, 0, 1, 0, 2],
        [52, -3.5, 1, 0, 0, 1],
        [41, 2000, 1, 0, 0, 0],
        [25, 0, 0, 0, 1, 2],
    ],
    "context_names": ("age", "income", "city_tier=t1", "city_tier=t2", "city_tier=t3", "category"),
    "cand_ptr": [0, 2, 4, 7, 8],
    "cand_idx": [2, 0, 0, 2, 2, 0, 1, 1],
}
ARRAYS = (
    "actions",
    "rewards",
    "pscores",
    "contexts",
    "timestamps",
    "positions",
    "cand_ptr",
    "cand_idx",
)


def write_csv(path, header=HEADER, rows=ROWS):
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def config(path, **changes) -> ForeignLogConfig:
    data = {"path": str(path), "columns": MAPPING, "groups": GROUPS, **changes}
    return ForeignLogConfig.model_validate(data)


def assert_same(a: LoggedData, b: LoggedData) -> None:
    for name in ("arm_ids", "arm_groups", "context_names"):
        assert getattr(a, name) == getattr(b, name), name
    for name in (*ARRAYS, "cand_prob"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_csv_loads_to_the_expected_arrays(tmp_path):
    data = load_foreign_log(config(write_csv(tmp_path / "logs.csv")))
    for name in ("arm_ids", "arm_groups", "context_names"):
        assert getattr(data, name) == EXPECTED[name], name
    for name in ARRAYS:
        arr = getattr(data, name)
        assert arr.tolist() == EXPECTED[name], name
        assert arr.dtype == (
            np.float64 if name in ("rewards", "pscores", "contexts", "timestamps") else np.int64
        )
        assert arr.flags.c_contiguous
    assert data.cand_prob is None
    assert data.source_rows.tolist() == TIME_ORDER and data.source_size == len(ROWS)
    assert data.shard(1, 2).source_rows.tolist() == TIME_ORDER[2:]


def decimal_comma_csv(path, delimiter=";"):
    """The test CSV as a decimal-comma locale writes it: fields split by ``delimiter``,
    numbers and epoch seconds with a comma, a cell holding the delimiter quoted."""
    numeric = {HEADER.index(c) for c in ("reward", "pscore", "age", "income", "ts")}
    lines = []
    for row in [HEADER, *ROWS]:
        cells = []
        for j, cell in enumerate(row):
            if row is not HEADER and j in numeric and "T" not in cell:
                cell = cell.replace(".", ",")
            cells.append(f'"{cell}"' if delimiter in cell else cell)
        lines.append(delimiter.join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_decimal_comma_file_with_another_delimiter_loads_the_same_arrays(tmp_path, delimiter):
    want = load_foreign_log(config(write_csv(tmp_path / "dot.csv")))
    path = decimal_comma_csv(tmp_path / "comma.csv", delimiter)
    assert "1000,5" in path.read_text()
    got = load_foreign_log(config(path, delimiter=delimiter, decimal=","))
    assert_same(got, want)
    # read with the default dialect, the same file is refused, not misread
    with pytest.raises(InvalidInputError, match=r"comma\.csv"):
        load_foreign_log(config(path))


def test_a_dot_in_a_decimal_comma_number_is_named_by_row(tmp_path):
    path = decimal_comma_csv(tmp_path / "comma.csv")
    path.write_text(path.read_text().replace(";1000,5;", ";1.000,5;"))  # thousands separator
    with pytest.raises(InvalidInputError, match=r"'income' \(context\[1\]\).*'\.' in a number"):
        load_foreign_log(config(path, delimiter=";", decimal=","))


def test_relative_path_resolves_against_base_dir(tmp_path):
    write_csv(tmp_path / "logs.csv")
    data = load_foreign_log(config("logs.csv"), base_dir=tmp_path)
    assert data.n_rounds == 4


def test_parquet_with_native_types_gives_identical_arrays(tmp_path):
    from_csv = load_foreign_log(config(write_csv(tmp_path / "logs.csv")))
    table = pacsv.read_csv(tmp_path / "logs.csv")  # inferred types: ints, floats, text
    assert table.schema.field("slot").type == pa.int64()
    pq.write_table(table, tmp_path / "logs.parquet")
    assert_same(load_foreign_log(config(tmp_path / "logs.parquet")), from_csv)

    in_file = np.array(EXPECTED["timestamps"])[np.argsort(TIME_ORDER)]
    stamps = pa.array((in_file * 1e3).astype(np.int64), pa.int64())
    zoned = table.set_column(4, "ts", stamps.cast(pa.timestamp("ms", tz="Asia/Shanghai")))
    pq.write_table(zoned, tmp_path / "zoned.dat")
    assert_same(load_foreign_log(config(tmp_path / "zoned.dat", format="parquet")), from_csv)


def test_integer_arm_ids_and_empty_context(tmp_path):
    table = pa.table({"a": [3, 1, 3], "r": [1.0, 0.0, 1.0], "p": [0.5, 0.5, 0.5]})
    pq.write_table(table, tmp_path / "ints.pq")
    cfg = ForeignLogConfig.model_validate(
        yaml.safe_load(
            "path: ints.pq\ncolumns: {action: a, reward: r, propensity: p, context: []}\n"
            "arms: [1, 2, 3]\n"
        )
    )
    data = load_foreign_log(cfg, base_dir=tmp_path)
    assert data.arm_ids == ("1", "2", "3")
    assert data.actions.tolist() == [2, 0, 2]
    assert data.contexts is None and data.context_names == ()
    assert data.cand_ptr is None and data.timestamps is None and data.arm_groups is None


def test_derived_arm_set_includes_arms_only_listed_as_candidates(tmp_path):
    rows = [[*r[:-1], "taobao;kuaishou"] if r[0] == "taobao" else r for r in ROWS]
    data = load_foreign_log(config(write_csv(tmp_path / "l.csv", rows=rows), groups=None))
    assert data.arm_ids == ("douyin", "jd", "kuaishou", "taobao")


def with_cell(column: str, cells: dict[int, str]):
    j = HEADER.index(column)
    return [
        [cells.get(i, v) if k == j else v for k, v in enumerate(row)] for i, row in enumerate(ROWS)
    ]


ARMS = {"arms": ["douyin", "jd", "taobao"]}

MALFORMED = [
    # (rows, config changes, match)
    (with_cell("pscore", {1: "0", 3: "0.0"}), {}, r"'pscore' \(propensity\).*2 rows.*\[1, 3\]"),
    (with_cell("pscore", {2: "1.5"}), {}, r"'pscore'.*not in \(0, 1\].*\[2\] hold \['?1\.5'?\]"),
    (with_cell("pscore", {0: ""}), {}, r"'pscore'.*missing.*\[0\] hold \[None\]"),
    (with_cell("pscore", {3: "high"}), {}, r"'pscore'.*not numbers.*\[3\] hold \['high'\]"),
    (with_cell("arm", {2: "kuaishou"}), ARMS, r"'arm' \(action\).*arm set.*\[2\]"),
    (with_cell("arm", {1: ""}), {}, r"'arm' \(action\).*missing.*\[1\]"),
    (with_cell("reward", {3: ""}), {}, r"'reward' \(reward\).*missing.*\[3\]"),
    (with_cell("reward", {0: "inf", 2: "nan"}), {}, r"'reward'.*non-finite.*\[0, 2\]"),
    (with_cell("age", {0: "old"}), {}, r"'age' \(context\[0\]\).*not numbers.*\[0\]"),
    (with_cell("income", {2: ""}), {}, r"'income' \(context\[1\]\).*missing.*\[2\]"),
    (with_cell("city_tier", {1: "t9"}), {}, r"'city_tier'.*levels not in.*\[1\] hold \['t9'\]"),
    (with_cell("category", {3: ""}), {}, r"'category' \(categorical index\).*missing.*\[3\]"),
    (with_cell("ts", {2: "yesterday"}), {}, r"'ts' \(timestamp\).*ISO-8601.*\[2\]"),
    (with_cell("ts", {0: "2024-01-01T00:00:00"}), {}, r"'ts'.*zone offset.*\[0\]"),
    (with_cell("ts", {1: "2024-13-01T00:00:00Z"}), {}, r"'ts'.*impossible dates.*\[1\]"),
    (with_cell("ts", {3: ""}), {}, r"'ts'.*missing.*\[3\]"),
    (with_cell("cands", {0: "douyin;jd"}), {}, r"'cands'.*logged action.*'arm'.*\[0\]"),
    (with_cell("cands", {1: "taobao;xx"}), ARMS, r"'cands'.*not in the arm set.*\[1\]"),
    (with_cell("cands", {3: "taobao;douyin;taobao"}), {}, r"'cands'.*twice.*\[3\]"),
    (with_cell("cands", {2: ""}), {}, r"'cands' \(candidates\).*missing.*\[2\]"),
    (with_cell("slot", {1: "-1", 2: "1.5"}), {}, r"'slot' \(position\).*\[1, 2\]"),
    (ROWS, {"groups": {"taobao": "taobao"}}, r"groups.*missing \['douyin', 'jd'\]"),
    # a declared range is checked at import; rows are the file's (row 3 is out of time order)
    (ROWS, {"reward_range": (0, 2)}, r"'reward' \(reward\): values outside the reward_range "
     r"\[0\.0, 2\.0\] in 1 row; first data rows \(0-based\) \[3\] hold \['2\.5'\]"),
    (with_cell("reward", {0: "-1"}), {"reward_range": (0, 1)},
     r"'reward'.*outside.*2 rows.*\[0, 3\] hold \['-1', '2\.5'\]"),
    # unknown actions when the arm set is declared, also once trimmed
    (with_cell("arm", {1: " kuaishou "}), ARMS, r"'arm' \(action\).*arm set.*\[1\]"),
    # several positions (a slate) without keep_position, and a position no row holds
    (with_cell("slot", {1: "1", 2: "2"}), {}, r"'slot' \(position\) holds 3 positions \[0, 1, "
     r"2\]: several items.*keep_position"),
    (ROWS, {"keep_position": 4}, r"'slot' \(position\): no row holds keep_position 4"),
    # ids blank once trimmed: an action, and an empty entry of a candidate list
    (with_cell("arm", {1: "  "}), {}, r"'arm' \(action\): blank arm ids in 1 row.*\[1\] hold "
     r"\['  '\]"),
    (with_cell("cands", {0: "taobao;"}), {}, r"'cands' \(candidates\): blank arm ids.*\[0\]"),
    (with_cell("cands", {1: "taobao; ;douyin", 2: " ;jd"}), {},
     r"'cands' \(candidates\): blank arm ids in 2 rows.*\[1, 2\]"),
]  # fmt: skip


@pytest.mark.parametrize(("rows", "changes", "match"), MALFORMED)
def test_malformed_values_name_the_column_and_rows(tmp_path, rows, changes, match):
    changes = dict(changes)
    span = changes.pop("reward_range", None)
    cfg = config(write_csv(tmp_path / "bad.csv", rows=rows), **changes)
    with pytest.raises(InvalidInputError, match=match):
        load_foreign_log(cfg, reward_range=span)
    table = pacsv.read_csv(
        tmp_path / "bad.csv",
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(HEADER, pa.string()),
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(InvalidInputError, match=match):  # the same rows in a text Parquet
        load_foreign_log(config(tmp_path / "bad.parquet", **changes), reward_range=span)


def test_padded_action_ids_are_trimmed_like_candidate_ids(tmp_path):
    padded = with_cell("arm", {0: "  taobao", 2: "jd\t"})
    data = load_foreign_log(config(write_csv(tmp_path / "l.csv", rows=padded), **ARMS))
    assert data.arm_ids == EXPECTED["arm_ids"]
    assert data.actions.tolist() == EXPECTED["actions"]


def test_an_undeclared_arm_set_is_reported_with_its_count_and_first_ids(tmp_path):
    rows = with_cell("arm", {1: "kuaishou"})
    rows = [[*r[:-1], r[-1] + ";kuaishou"] if i == 1 else r for i, r in enumerate(rows)]
    data = load_foreign_log(config(write_csv(tmp_path / "l.csv", rows=rows), groups=None))
    assert data.arm_ids == ("douyin", "jd", "kuaishou", "taobao")
    assert data.notes[0] == (
        "arms not declared: the 4 ids in column 'arm' and the candidates became the arm set, "
        "first ['douyin', 'jd', 'kuaishou', 'taobao'] (declare logs.foreign.arms to refuse others)"
    )
    assert not any("arms not declared" in n for n in load_foreign_log(
        config(tmp_path / "l.csv", groups=None, arms=data.arm_ids)).notes)  # fmt: skip


def test_rows_out_of_time_order_are_sorted_stably_and_reported(tmp_path):
    """Shards are time slices: the file's rows come back ordered by the timestamp column,
    rows with equal times in file order."""
    rows = with_cell("ts", {2: "1704067200.5"})  # the same time as row 3
    data = load_foreign_log(config(write_csv(tmp_path / "l.csv", rows=rows)))
    assert data.timestamps.tolist() == [1704067200.0, 1704067200.5, 1704067200.5, 1704067260.0]
    assert data.rewards.tolist() == [1.0, 0.5, 2.5, 0.0]  # file rows 0, 2, 3, 1
    assert data.notes[-1] == (
        "rows ordered by column 'ts': 2 rows were earlier than a row above them (first data "
        "rows [2, 3])"
    )
    first, second = data.shard(0, 2), data.shard(1, 2)
    assert first.timestamps.max() <= second.timestamps.min()
    in_order = load_foreign_log(
        config(write_csv(tmp_path / "o.csv", rows=[ROWS[i] for i in TIME_ORDER]))
    )
    assert not any(n.startswith("rows ordered") for n in in_order.notes)  # fmt: skip


def test_one_position_of_a_slate_log_is_kept_with_its_propensities(tmp_path):
    rows = with_cell("slot", {1: "1", 3: "1"})
    data = load_foreign_log(config(write_csv(tmp_path / "l.csv", rows=rows), keep_position=1))
    assert data.positions.tolist() == [1, 1]
    assert data.pscores.tolist() == [0.1, 0.25]  # file rows 3 then 1 (time order)
    assert data.cand_ptr.tolist() == [0, 2, 5] and data.cand_idx.tolist() == [0, 2, 2, 0, 1]
    assert data.source_rows.tolist() == [3, 1] and data.source_size == 4
    with pytest.raises(ValidationError, match="keep_position needs a position column"):
        config(tmp_path / "l.csv", keep_position=0,
               columns={k: v for k, v in MAPPING.items() if k != "position"})  # fmt: skip


def test_missing_column_lists_the_files_columns(tmp_path):
    path = write_csv(tmp_path / "l.csv", HEADER[:2] + HEADER[3:], [r[:2] + r[3:] for r in ROWS])
    with pytest.raises(InvalidInputError, match=r"no column 'pscore' \(propensity\).*'arm'"):
        load_foreign_log(config(path))
    pq.write_table(pacsv.read_csv(path), tmp_path / "l.parquet")
    with pytest.raises(InvalidInputError, match=r"no column 'pscore'.*'cands'\]"):
        load_foreign_log(config(tmp_path / "l.parquet"))


def test_at_most_five_bad_rows_are_shown(tmp_path):
    rows = [[*ROWS[0][:2], "0", *ROWS[0][3:]]] * 8
    with pytest.raises(InvalidInputError, match=r"8 rows.*\[0, 1, 2, 3, 4, \.\.\.\]"):
        load_foreign_log(config(write_csv(tmp_path / "l.csv", rows=rows)))


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(InvalidInputError, match=r"cannot read .*nope\.csv"):
        load_foreign_log(config(tmp_path / "nope.csv"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInputError, match=r"cannot read .*junk\.parquet as parquet"):
        load_foreign_log(config(tmp_path / "junk.parquet"))
    with pytest.raises(InvalidInputError, match="no data rows"):
        load_foreign_log(config(write_csv(tmp_path / "empty.csv", rows=[])))
    # a column name that is not UTF-8, even one the mapping does not use
    (tmp_path / "names.csv").write_bytes(b"arm,\xff\n" + b"taobao,1\n")
    pq.write_table(pa.table({"arm": ["a"], "zq": [1]}), tmp_path / "n.pq", store_schema=False)
    named = (tmp_path / "n.pq").read_bytes()
    assert named.count(b"zq") == 2  # the schema and the column chunk
    (tmp_path / "names.parquet").write_bytes(named.replace(b"zq", b"\xff\xfe"))
    for path in (tmp_path / "names.csv", tmp_path / "names.parquet"):
        with pytest.raises(InvalidInputError, match=r"its column name b'\\xff.*' is not UTF-8"):
            load_foreign_log(config(path))
    pq.write_table(pa.table({"arm": [1.5], "reward": [1.0], "pscore": [1.0]}), tmp_path / "f.pq")
    cfg = ForeignLogConfig.model_validate(
        {
            "path": tmp_path / "f.pq",
            "columns": {k: MAPPING[k] for k in MAPPING if k in ("action", "reward", "propensity")},
        }
    )
    with pytest.raises(InvalidInputError, match=r"'arm' \(action\) has type double"):
        load_foreign_log(cfg)


def _native(tmp_path, column: str, values: pa.Array, mapping: dict) -> ForeignLogConfig:
    """A Parquet log of three rows with ``column`` holding ``values`` as written."""
    table = {"arm": ["a", "b", "a"], "reward": [0.0, 1.0, 0.0], "pscore": [0.5] * 3}
    pq.write_table(pa.table({**table, column: values}), tmp_path / "native.parquet")
    columns = {"action": "arm", "reward": "reward", "propensity": "pscore", **mapping}
    return ForeignLogConfig.model_validate(
        {"path": tmp_path / "native.parquet", "columns": columns}
    )


@pytest.mark.parametrize(
    ("column", "values", "mapping", "match"),
    [
        ("reward", pa.array([0, 2**53 + 1, 1], pa.int64()), {},
         r"'reward' \(reward\): integers beyond ±2\*\*53.* \[1\] hold \[9007199254740993\]"),
        ("reward", pa.array([0, 1, 2**64 - 1], pa.uint64()), {}, r"'reward' \(reward\).*\[2\]"),
        ("pscore", pa.array([1, -(2**63), 1], pa.int64()), {}, r"'pscore' \(propensity\).*\[1\]"),
        ("age", pa.array([2**62, 0, None], pa.int64()), {"context": ["age"]},
         r"'age' \(context\[0\]\): integers beyond ±2\*\*53.* in 1 row.*\[0\]"),
        ("slot", pa.array([2**63 - 1] * 3, pa.int64()), {"position": "slot"},
         r"'slot' \(position\): integers beyond ±2\*\*53.* 3 rows"),
    ],
)  # fmt: skip
def test_integers_float64_does_not_hold_are_named_by_column_and_rows(
    tmp_path, column, values, mapping, match
):
    with pytest.raises(InvalidInputError, match=match):
        load_foreign_log(_native(tmp_path, column, values, mapping))


def test_nanosecond_timestamps_load_at_any_date(tmp_path):
    """Nanosecond ticks of any date since 1970-04 are past 2**53 (their rounding to float
    seconds is under a microsecond): refused by a safe cast once."""
    ticks = [1_704_067_200_123_456_789, 2**62, 0]
    stamps = pa.array(ticks, pa.timestamp("ns", tz="UTC"))
    data = load_foreign_log(_native(tmp_path, "ts", stamps, {"timestamp": "ts"}))
    np.testing.assert_allclose(data.timestamps, sorted(t / 1e9 for t in ticks), rtol=0, atol=1e-6)


def test_iso_text_with_a_nanosecond_fraction_loads(tmp_path):
    """pandas writes datetime64[ns] as text with nine fractional digits; they are read at
    nanosecond precision and cut to the microsecond (they were "impossible dates")."""
    texts = pa.array([
        "2019-11-24 00:00:01.387735123+00:00", "2019-11-24 00:00:02.5+00:00",
        "2019-11-24T00:00:03.000000001Z",
    ])  # fmt: skip
    data = load_foreign_log(_native(tmp_path, "ts", texts, {"timestamp": "ts"}))
    start = 1_574_553_600.0
    np.testing.assert_allclose(
        data.timestamps, [start + 1.387735, start + 2.5, start + 3.0], rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize(
    ("column", "role", "row", "cell"),
    [
        ("arm", "action", 1, b"douyin\xff"),
        ("pscore", "propensity", 2, b"1.0\xff"),
        ("city_tier", "categorical one_hot", 3, b"t\xc3"),
        ("cands", "candidates", 0, b"taobao;\xe4\xb8"),
    ],
)
def test_text_that_is_not_utf8_is_named_by_column_and_rows(
    tmp_path, suffix, column, role, row, cell
):
    """Parquet takes whatever bytes a writer marks as text; a CSV is read unchecked too, so
    that the bad rows are named (their conversion once failed with a raw error)."""
    text = write_csv(tmp_path / "l.csv", rows=with_cell(column, {row: "CELL"})).read_bytes()
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(text.replace(b"CELL", cell))
    if suffix == ".parquet":
        as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(HEADER, pa.string()),
                                       check_utf8=False)  # fmt: skip
        pq.write_table(pacsv.read_csv(path, convert_options=as_text), path)
    match = (
        rf"'{column}' \({role}\): text that is not UTF-8 in 1 row; first data rows \(0-based\) "
        rf"\[{row}\] hold \[{re.escape(repr(cell))}\]"
    )
    with pytest.raises(InvalidInputError, match=match):
        load_foreign_log(config(path))


def test_one_hot_is_bounded_in_levels_and_index_is_not(tmp_path):
    """One float column per level: a column of ids would be an (n, n) matrix (40,000 rows,
    12.8 GB). Refused, fixed levels or not, naming the column and its levels."""
    n = MAX_ONE_HOT_LEVELS + 1
    path = tmp_path / "cities.csv"
    path.write_text("arm,reward,p,city\n" + "".join(f"a,1,0.5,c{i}\n" for i in range(n)))
    columns = {"action": "arm", "reward": "reward", "propensity": "p"}
    match = r"'city' \(categorical one_hot\) has 1,001 levels, over the 1,000 .*index"
    for levels in ({}, {"city": [f"c{i}" for i in range(n)]}):
        cfg = ForeignLogConfig.model_validate(
            {
                "path": path,
                "columns": {**columns, "categorical": {"city": "one_hot"}, "levels": levels},
            }
        )
        with pytest.raises(InvalidInputError, match=match):
            load_foreign_log(cfg)
    cfg = ForeignLogConfig.model_validate(
        {"path": path, "columns": {**columns, "categorical": {"city": "index"}}}
    )
    assert load_foreign_log(cfg).contexts.shape == (n, 1)


YAML = """
path: data/logs.csv
columns:
  action: arm
  reward: reward
  propensity: pscore
  position: slot
  timestamp: ts
  context: [age, income]
  categorical:
    city_tier: one_hot
    category: index
  levels: {city_tier: [t1, t2, t3]}
  candidates: cands
arms: [taobao, douyin, jd]
groups: {taobao: taobao, douyin: partner, jd: partner}
"""


def test_config_yaml_round_trip():
    cfg = ForeignLogConfig.model_validate(yaml.safe_load(YAML))
    assert cfg.file_format == "csv"
    assert list(cfg.columns.categorical) == ["city_tier", "category"]
    dumped = yaml.safe_dump(cfg.model_dump(mode="json"))
    assert ForeignLogConfig.model_validate(yaml.safe_load(dumped)) == cfg
    with pytest.raises(ValidationError, match="frozen"):
        cfg.columns.action = "x"  # type: ignore[misc]


def edit(path: str, value):
    data = yaml.safe_load(YAML)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


INVALID_CONFIGS = [
    (edit("columns.reward", "arm"), r"column 'arm' is mapped twice: as action and reward"),
    (edit("columns.context", ["age", "slot"]), r"'slot' is mapped twice"),
    (edit("columns.categorical", {"city_tier": "ordinal"}), r"columns.categorical.city_tier"),
    (edit("columns.levels", {"age": ["a"]}), r"levels given for 'age'"),
    (edit("columns.levels", {"city_tier": []}), r"levels of 'city_tier' is empty"),
    (edit("columns.levels", {"city_tier": ["t1", "t1"]}), r"repeats \['t1'\]"),
    (edit("columns.action", None), r"columns.action\n.*Field required"),
    (edit("columns.propensity", ""), r"columns.propensity\n.*at least 1 character"),
    (edit("columns.weight", "w"), r"columns.weight\n.*Extra inputs"),
    (edit("path", "logs.txt"), r"suffix '.txt'"),
    (edit("format", "json"), r"format\n"),
    (edit("arms", ["jd", "jd"]), r"arms repeats \['jd'\]"),
    (edit("arms", []), r"arms\n.*at least 1 item"),
    (edit("groups", {"taobao": "taobao"}), r"missing \['douyin', 'jd'\]"),
    (edit("groups.jd", "bad group!"), r"groups.jd\n.*pattern"),
    (edit("decimal", ","), r"delimiter and decimal are both ','"),
    (edit("delimiter", ";;"), r"delimiter = ';;': expected one printable ASCII character"),
    (edit("delimiter", '"'), r"other than a quote"),
    (edit("delimiter", ""), r"expected one printable"),
    (edit("delimiter", "\n"), r"expected one printable"),
    (edit("delimiter", "\0"), r"expected one printable"),
    (edit("delimiter", "§"), r"expected one printable ASCII"),  # pyarrow takes one byte
    (edit("decimal", ";"), r"decimal\n.*'\.' or ','"),
    ({**edit("path", "logs.parquet"), "delimiter": ";"}, r"apply to CSV files only"),
]


@pytest.mark.parametrize(("data", "match"), INVALID_CONFIGS)
def test_invalid_configs_name_the_field(data, match):
    with pytest.raises(ValidationError, match=match):
        ForeignLogConfig.model_validate(data)


def write_log(directory, decisions, outcomes=()):
    with DecisionLogWriter(directory) as w:
        w.write_decisions(decisions)
        w.write_outcomes(list(outcomes))
    return load_decision_log(directory)


def own_log(tmp_path, context=None):
    decisions = [
        decision(0, context=context),
        decision(1, arm_id="jd", arm_index=2, group="partner", propensity=0.25, context=context),
        decision(
            2,
            arm_id="shop:7",
            group="mini_shop",
            candidates=("shop:7", "pdd"),
            candidate_probabilities=(0.9, 0.1),
            propensity=0.9,
            context=context,
        ),
        decision(3, arm_id="jd", group="partner", propensity=0.25, context=context),
    ]
    outcomes = [outcome(0, reward=1.0, gmv=10.0), outcome(1, reward=0.0), outcome(3, reward=0.5)]
    return write_log(tmp_path, decisions, outcomes)


def test_decision_log_without_outcomes_is_an_error_unless_dropped(tmp_path):
    log = own_log(tmp_path)
    with pytest.raises(InvalidInputError, match=r"1 decision, first \['r0-2'\].*missing='drop'"):
        from_decision_log(log)
    data = from_decision_log(log, missing="drop")
    assert data.arm_ids == ("jd", "shop:7", "taobao")  # pdd: a candidate of dropped round 2 only
    assert data.arm_groups == ("partner", "mini_shop", "taobao")
    assert data.actions.tolist() == [2, 0, 0]
    assert data.rewards.tolist() == [1.0, 0.0, 0.5]
    assert data.pscores.tolist() == [0.5, 0.25, 0.25]
    assert data.timestamps.tolist() == [1_700_000_000.0, 1_700_000_001.0, 1_700_000_003.0]
    assert data.cand_ptr.tolist() == [0, 3, 6, 9]
    assert data.cand_idx.tolist() == [2, 1, 0] * 3
    assert data.cand_prob.tolist() == [0.5, 0.25, 0.25] * 3
    assert data.contexts is None and data.positions is None
    cand_of_action = data.cand_prob[data.cand_ptr[:-1] + np.array([0, 2, 2])]
    assert np.array_equal(cand_of_action, data.pscores)


def test_decision_log_keeps_every_round_and_picks_the_outcome_column(tmp_path):
    log = write_log(
        tmp_path / "all",
        [decision(i, context=(i, 1.0)) for i in range(3)],
        [outcome(i, gmv=2.0 * i) for i in range(3)],
    )
    data = from_decision_log(log, reward="gmv", arm_ids=["taobao", "shop:7", "jd", "pdd"])
    assert data.arm_ids == ("taobao", "shop:7", "jd", "pdd")
    assert data.arm_groups is None  # pdd and others were never chosen: groups unknown
    assert data.rewards.tolist() == [0.0, 2.0, 4.0]
    assert data.contexts.tolist() == [[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
    assert data.cand_idx.tolist() == [0, 1, 2] * 3
    assert data.cand_ptr.tolist() == [0, 3, 6, 9]


def test_decision_log_conversion_errors(tmp_path):
    log = own_log(tmp_path)
    with pytest.raises(InvalidInputError, match=r"reward = 'revenue'"):
        from_decision_log(log, reward="revenue")
    with pytest.raises(InvalidInputError, match=r"missing = 'skip'"):
        from_decision_log(log, missing="skip")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"2 decisions, first \['r0-1', 'r0-3'\] chose"):
        from_decision_log(log, missing="drop", arm_ids=["taobao", "shop:7"])
    with pytest.raises(InvalidInputError, match=r"first \['r0-0', 'r0-1', 'r0-3'\] have cand"):
        from_decision_log(log, missing="drop", arm_ids=["taobao", "jd"])
    with pytest.raises(InvalidInputError, match=r"arm_ids repeats \['jd'\]"):
        from_decision_log(log, missing="drop", arm_ids=["jd", "jd"])
    with pytest.raises(InvalidInputError, match=r"arm_ids = 'jd'"):
        from_decision_log(log, missing="drop", arm_ids="jd")

    mixed = write_log(
        tmp_path / "mixed", [decision(0, context=(1.0,)), decision(1)], [outcome(0), outcome(1)]
    )
    with pytest.raises(InvalidInputError, match=r"first \['r0-1'\] were logged without a context"):
        from_decision_log(mixed)
    moved = write_log(
        tmp_path / "moved", [decision(0), decision(1, group="partner")], [outcome(0), outcome(1)]
    )
    with pytest.raises(InvalidInputError, match=r"'taobao' is logged in groups"):
        from_decision_log(moved)
    bare = write_log(tmp_path / "bare", [decision(0)])
    with pytest.raises(InvalidInputError, match="no decision with an outcome"):
        from_decision_log(bare, missing="drop")


def test_decision_log_brings_attrs_in_time_order_and_checks_a_declared_range(tmp_path):
    """Request attributes (what contract scopes read) and timestamps come along; a replica's
    late part puts rows out of time order, which the conversion sorts; outcomes outside a
    declared range are errors naming the decisions."""
    decisions = [
        decision(0, attrs={"category": "shoes"}),
        decision(1, timestamp=1_699_999_990.0, attrs={"category": "bags", "slot": "top"}),
        decision(2, attrs={}),
    ]
    log = write_log(tmp_path, decisions, [outcome(i, reward=0.5 * i) for i in range(3)])
    data = from_decision_log(log)
    assert data.timestamps.tolist() == [1_699_999_990.0, 1_700_000_000.0, 1_700_000_002.0]
    assert data.rewards.tolist() == [0.5, 0.0, 1.0]
    assert data.attrs["category"].tolist() == ["bags", "shoes", ""]
    assert data.attrs["slot"].tolist() == ["top", "", ""]
    assert data.notes == (
        "rows ordered by timestamp: 1 rows were earlier than a row above them (first data "
        "rows [1])",
    )
    with pytest.raises(InvalidInputError, match=r"1 decision, first \['r0-2'\] have reward "
                       r"outside the reward_range \[0\.0, 0\.9\]: \[1\.0\]"):  # fmt: skip
        from_decision_log(log, reward_range=(0, 0.9))


def catalogue(path, ids, groups, features) -> None:
    feats = pa.array(features, pa.list_(pa.float64()))
    pq.write_table(pa.table({"id": ids, "group": groups, "features": feats}), path)


def test_an_arms_catalogue_gives_the_logs_arms_their_groups_and_features(tmp_path):
    """Logs carry no arm features and no group for an arm never chosen: the catalogue does,
    in the log's arm order, whatever its own order and extra arms; a shared-model policy is
    then built over the log's arms with them."""
    from allocator.errors import ConfigError
    from allocator.replay.sources import with_catalogue
    from allocator.replay.targets import policy_for_log

    data = load_foreign_log(config(write_csv(tmp_path / "logs.csv"), groups=None))
    assert data.arm_groups is None and set(data.arm_ids) == {"taobao", "douyin", "jd"}
    ids = ["shop:1", "taobao", "jd", "douyin"]  # another order, one arm the log lacks
    feats = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [2.0, -1.0]]
    catalogue(tmp_path / "arms.parquet", ids, ["mini_shop", "taobao", "partner", "partner"],
              feats)  # fmt: skip
    withf = with_catalogue(data, tmp_path / "arms.parquet", True)
    for i, arm in enumerate(data.arm_ids):
        np.testing.assert_array_equal(withf.arm_features[i], feats[ids.index(arm)])
        assert withf.arm_groups[i] == {"taobao": "taobao", "jd": "partner",
                                       "douyin": "partner"}[arm]  # fmt: skip
    assert with_catalogue(data, tmp_path / "arms.parquet", False).arm_features is None
    engine = {"policy": {"kind": "shared_linear", "n_context_features": withf.contexts.shape[1],
                         "n_arm_features": 2}}  # fmt: skip
    pol = policy_for_log(engine, withf, 1)
    np.testing.assert_array_equal(pol.state.features[: data.n_arms], withf.arm_features)
    with pytest.raises(ConfigError, match=r"logs\.arms_file"):
        policy_for_log(engine, data, 1)
    # an arm of the log missing from the catalogue, a ragged features row: named
    catalogue(tmp_path / "few.parquet", ["taobao", "jd"], ["taobao", "partner"], feats[:2])
    with pytest.raises(ConfigError, match=r"not all in it .*'douyin'"):
        with_catalogue(data, tmp_path / "few.parquet", True)
    ragged = [[0.0, 1.0], [1.0], [0.5, 0.5], [2.0, 1.0]]
    catalogue(tmp_path / "ragged.parquet", ids, ["g"] * 4, ragged)
    with pytest.raises(ConfigError, match=r"'features' must hold 2 values a row: rows \[1\]"):
        with_catalogue(data, tmp_path / "ragged.parquet", True)
    # groups that are no group names, or not text at all: the group column and its rows
    catalogue(tmp_path / "groups.parquet", ids, ["g", "", "g", "\x00"], feats)
    with pytest.raises(ConfigError, match=r"column 'group' names groups \['', '\\x00'\] that "
                       r"do not match .* at rows \[1, 3\]"):  # fmt: skip
        with_catalogue(data, tmp_path / "groups.parquet", False)
    groups = pa.array([b"g", b"g", b"g\xff", b"g"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ids, "group": groups}), tmp_path / "bytes.parquet")
    with pytest.raises(
        ConfigError, match=r"column 'group' holds text that is not UTF-8 at rows \[2\]"
    ):
        with_catalogue(data, tmp_path / "bytes.parquet", False)
