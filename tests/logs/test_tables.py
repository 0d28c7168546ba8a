"""The batch path: whole Arrow tables validated column-wise, written as parts, read back."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from allocator.errors import AllocatorError, InvalidInputError
from allocator.logs import DecisionLogWriter, load_decision_log
from allocator.logs.catalogue import catalogue_rows
from allocator.logs.schema import decisions_table, outcomes_table
from allocator.logs.tables import check_table
from tests.logs.helpers import decision, outcome


def _decisions(n: int = 5) -> pa.Table:
    return decisions_table([decision(i, context=(0.5, float(i))) for i in range(n)])


def _outcomes(n: int = 5) -> pa.Table:
    return outcomes_table([outcome(i) for i in range(n)])


def _set(table: pa.Table, name: str, row: int, value: object) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(name)
    return table.set_column(
        i, table.schema.field(name), pa.array(values, table.schema.field(name).type)
    )


def test_a_table_written_whole_reads_back_like_records(tmp_path):
    with DecisionLogWriter(tmp_path / "batch", rotate_rows=2) as w:
        w.write_table("decisions", _decisions().select(list(reversed(_decisions().column_names))))
        w.write_table("outcomes", _outcomes())
    with DecisionLogWriter(tmp_path / "records") as w:
        w.write_decisions([decision(i, context=(0.5, float(i))) for i in range(5)])
        w.write_outcomes([outcome(i) for i in range(5)])
    parts = sorted(p.name for p in (tmp_path / "batch").glob("*.parquet"))
    assert len(parts) == 6 and parts[0].startswith("decisions-")  # 3 + 3 parts of <= 2 rows
    batch, records = load_decision_log(tmp_path / "batch"), load_decision_log(tmp_path / "records")
    assert list(batch.decision_id) == list(records.decision_id)
    assert (batch.reward == records.reward).all() and (batch.context == records.context).all()
    assert batch.attrs == records.attrs and list(batch.cand_ids) == list(records.cand_ids)


def test_a_closed_writer_refuses_tables(tmp_path):
    w = DecisionLogWriter(tmp_path)
    w.close()
    with pytest.raises(AllocatorError, match="closed"):
        w.write_table("decisions", _decisions())


BAD_DECISIONS = [
    (lambda t: t.drop_columns(["forced"]), r"missing columns \['forced'\]"),
    (lambda t: t.append_column("extra", pa.array(range(5))), r"unknown columns \['extra'\]"),
    (lambda t: _set(t, "decision_id", 2, ""), r"decision_id\[2\] = '': expected a non-empty"),
    (lambda t: _set(t, "arm_id", 1, None), r"arm_id\[1\] = None: expected a value"),
    (lambda t: _set(t, "timestamp", 3, float("nan")), r"timestamp\[3\] = nan"),
    (lambda t: _set(t, "propensity", 0, 0.0), r"propensity\[0\] = 0.0: expected a probability"),
    (lambda t: _set(t, "propensity", 4, 0.25), r"propensity\[4\] = 0.25: expected the chosen"),
    (lambda t: _set(t, "arm_id", 2, "jd2"), r"arm_id\[2\] = 'jd2': expected exactly one"),
    (lambda t: _set(t, "candidates", 1, []), r"candidates\[1\] = \[\]: expected at least one"),
    (lambda t: _set(t, "candidate_probabilities", 1, [0.5, 0.5]), r"one probability per"),
    (lambda t: _set(t, "candidate_probabilities", 3, [0.5, 0.3, 0.3]), r"summing to 1"),
    (lambda t: _set(t, "candidate_probabilities", 3, [0.5, 1.5, -1.0]), r"\[3\] = .*in \[0, 1\]"),
    (lambda t: _set(t, "context", 2, [0.0, float("inf")]), r"context\[2\] = .*finite numbers"),
    (
        lambda t: _set(t, "arm_index", 0, -1),
        r"arm_index\[0\] = -1: expected a finite number >= 0",
    ),
    (
        lambda t: t.set_column(4, "arm_index", pa.array(["x"] * 5)),
        r"column arm_index: expected int64",
    ),
]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: _set(t, "gmv", 1, -2.0), r"gmv\[1\] = -2.0: expected a finite number >= 0"),
        (lambda t: _set(t, "reward", 0, float("nan")), r"reward\[0\] = nan"),
        (lambda t: _set(t, "source", 4, "guess"), r"source\[4\] = 'guess': expected one of"),
    ],
)
def test_invalid_outcome_tables_name_the_column_and_row(change, match):
    with pytest.raises(InvalidInputError, match=match):
        check_table("outcomes", change(_outcomes()))


def test_check_table_refuses_unknown_kinds_and_non_tables():
    with pytest.raises(InvalidInputError, match="kind = 'events'"):
        check_table("events", _outcomes())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"expected a pyarrow\.Table"):
        check_table("outcomes", {"decision_id": ["a"]})  # type: ignore[arg-type]
    assert check_table("outcomes", _outcomes().slice(0, 0)).num_rows == 0
    assert pc.all(pc.equal(check_table("outcomes", _outcomes()).column("click"), 1.0)).as_py()


def _indexed(n: int = 5) -> pa.Table:
    """:func:`_decisions` in schema 3: candidates taobao, shop:7, jd as indices 0, 1, 2."""
    t = _decisions(n).drop_columns(["arm_id", "group", "candidates"])
    t = t.set_column(t.schema.get_field_index("arm_index"), "arm_index", pa.array([0] * n))
    return t.append_column("catalogue", pa.array([7] * n)).append_column(
        "candidate_indices", pa.array([[0, 1, 2]] * n)
    )


def _catalogue() -> pa.Table:
    return catalogue_rows(7, 0, pa.array(["taobao", "shop:7", "jd"]), pa.array(["t", "m", "j"]))


def test_an_indexed_table_written_whole_reads_back_like_records(tmp_path):
    with DecisionLogWriter(tmp_path / "batch", rotate_rows=2) as w:
        w.write_table("catalogue", _catalogue())
        w.write_table("decisions", _indexed())
    with DecisionLogWriter(tmp_path / "records") as w:
        w.write_decisions([decision(i, context=(0.5, float(i))) for i in range(5)])
    batch, records = load_decision_log(tmp_path / "batch"), load_decision_log(tmp_path / "records")
    assert list(batch.cand_ids) == list(records.cand_ids) and list(batch.arm_id) == ["taobao"] * 5
    assert (batch.context == records.context).all() and batch.attrs == records.attrs


BAD_INDEXED = [
    (lambda t: t.drop_columns(["catalogue"]), r"missing columns \['catalogue'\]"),
    (lambda t: _set(t, "candidate_indices", 1, []), r"candidate_indices\[1\] = \[\]: expected at"),
    (lambda t: _set(t, "candidate_indices", 2, [0, -4, 2]), r"candidate_indices\[2\] = .*>= 0"),
    (lambda t: _set(t, "arm_index", 3, 5), r"arm_index\[3\] = 5: expected exactly one of the"),
    (lambda t: _set(t, "candidate_indices", 4, [0, 1]), r"probabilities\[4\] .*one probability"),
    (lambda t: _set(t, "catalogue", 0, None), r"catalogue\[0\] = None: expected a value"),
]


@pytest.mark.parametrize(
    ("table", "change", "match"),
    [(_decisions, *bad) for bad in BAD_DECISIONS] + [(_indexed, *bad) for bad in BAD_INDEXED],
)
def test_invalid_decision_tables_name_the_column_and_row(tmp_path, table, change, match):
    """Schema 2 (id strings) and schema 3 (catalogue indices) tables alike."""
    w = DecisionLogWriter(tmp_path)
    with pytest.raises(InvalidInputError, match=match):
        w.write_table("decisions", change(table()))
    w.close()
    assert not any(tmp_path.glob("*.parquet"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: _set(t, "arm_id", 1, ""), r"arm_id\[1\] = '': expected a non-empty string"),
        (lambda t: _set(t, "group", 2, None), r"group\[2\] = None: expected a value"),
        (lambda t: _set(t, "arm_index", 0, -1), r"arm_index\[0\] = -1: expected a finite .*>= 0"),
        (lambda t: t.drop_columns(["epoch"]), r"catalogue table: missing columns \['epoch'\]"),
    ],
)
def test_invalid_catalogue_tables_name_the_column_and_row(change, match):
    with pytest.raises(InvalidInputError, match=match):
        check_table("catalogue", change(_catalogue()))
