from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allocator.errors import InvalidInputError, LogCorrupt
from allocator.logs import DecisionLogWriter, load_decision_log, parts
from allocator.logs.parts import PartName, encode_part
from allocator.logs.schema import DECISION_SCHEMA, decisions_table, file_metadata
from tests.logs.helpers import decision, outcome


def write(directory, decisions=(), outcomes=(), **kwargs) -> None:
    with DecisionLogWriter(directory, **kwargs) as w:
        for d in decisions:
            w.write_decision(d)
        for o in outcomes:
            w.write_outcome(o)


def test_round_trip_reads_back_every_written_value(tmp_path):
    records = [
        decision(
            0,
            context=(0.5, -1.0),
            adjusted_by=("partner_floor", "shop_cap"),
            forced=True,
            propensity=1.0,
            candidates=("shop:1", "taobao"),
            candidate_probabilities=(1.0, 0.0),
            arm_id="shop:1",
            arm_index=5,
            group="mini_shop",
        ),
        decision(1, request_id=None, attrs={}, context=np.array([2.0, 3.0])),
        decision(
            2,
            candidates=np.array(["jd", "taobao", "pdd", "shop:2"]),
            candidate_probabilities=np.array([0.1, 0.2, 0.3, 0.4]),
            arm_id="pdd",
            arm_index=np.int64(9),
            propensity=np.float64(0.3),
            context=None,
            attrs={"category": "电子", "slot": ""},
            model_version=12,
            policy_kind="linear_gaussian",
        ),
    ]
    outcomes = [
        outcome(0, click=1.0, order=1.0, gmv=99.5, reward=2.5),
        outcome(2, click=0.0, reward=0.0, source="expired_default", timestamp=1.5e9),
    ]
    write(tmp_path, records, outcomes, rotate_rows=2)
    log = load_decision_log(tmp_path)

    assert len(log) == 3
    for name in ("decision_id", "request_id", "timestamp", "arm_id", "arm_index", "group",
                 "propensity", "forced", "model_version", "policy_kind"):  # fmt: skip
        assert getattr(log, name).tolist() == [getattr(r, name) for r in records], name
    assert log.arm_index.dtype == np.int64 and log.forced.dtype == np.bool_
    assert log.timestamp.dtype == log.propensity.dtype == np.float64
    assert log.cand_ptr.tolist() == [0, 2, 5, 9]
    assert log.cand_ptr.dtype == np.int64
    assert log.cand_ids.tolist() == [c for r in records for c in r.candidates]
    assert log.cand_prob.tolist() == [float(p) for r in records for p in r.candidate_probabilities]
    assert log.adj_ptr.tolist() == [0, 2, 2, 2]
    assert log.adj_names.tolist() == ["partner_floor", "shop_cap"]
    assert log.attrs == [dict(r.attrs) for r in records]
    assert log.n_features == 2
    assert log.context is not None
    np.testing.assert_array_equal(log.context[:2], [[0.5, -1.0], [2.0, 3.0]])
    assert np.isnan(log.context[2]).all()  # logged without a context

    np.testing.assert_array_equal(log.reward, [2.5, np.nan, 0.0])
    np.testing.assert_array_equal(log.click, [1.0, np.nan, 0.0])
    np.testing.assert_array_equal(log.order, [1.0, np.nan, 0.0])
    np.testing.assert_array_equal(log.gmv, [99.5, np.nan, 0.0])
    np.testing.assert_array_equal(log.outcome_timestamp, [outcomes[0].timestamp, np.nan, 1.5e9])
    assert log.outcome_source.tolist() == ["feedback", None, "expired_default"]
    assert log.has_outcome.tolist() == [True, False, True]
    assert log.duplicate_outcomes == log.orphan_outcomes == log.duplicate_decisions == 0
    with pytest.raises(ValueError, match="read-only"):
        log.reward[0] = 1.0


def test_context_free_log_has_no_context_and_empty_directory_is_empty(tmp_path):
    empty = load_decision_log(tmp_path)
    assert len(empty) == 0 and empty.context is None and empty.cand_ptr.tolist() == [0]
    assert empty.attrs == [] and empty.reward.shape == (0,)
    write(tmp_path, [decision(i) for i in range(3)])
    log = load_decision_log(tmp_path)
    assert log.context is None and log.n_features == 0
    assert log.cand_ptr.tolist() == [0, 3, 6, 9]


def test_first_written_outcome_wins_and_duplicates_and_orphans_are_counted(tmp_path):
    write(tmp_path, [decision(i) for i in range(3)], [outcome(1, reward=1.0)], rotate_rows=2)
    write(
        tmp_path,
        [],
        [
            outcome(1, reward=2.0),  # duplicate of an earlier part
            outcome(0, reward=3.0),
            outcome(99, reward=4.0),  # orphan
            outcome(0, reward=5.0, source="expired_default"),  # duplicate in the same part
            outcome(98),  # orphan
        ],
    )
    log = load_decision_log(tmp_path)
    np.testing.assert_array_equal(log.reward, [3.0, 1.0, np.nan])
    assert log.outcome_source.tolist() == ["feedback", "feedback", None]
    assert log.duplicate_outcomes == 2
    assert log.orphan_outcomes == 2


def test_repeated_decision_ids_keep_the_first_row(tmp_path):
    write(tmp_path, [decision(0), decision(1), decision(0, arm_id="jd", propensity=0.25)])
    log = load_decision_log(tmp_path)
    assert log.decision_id.tolist() == ["r0-0", "r0-1"]
    assert log.arm_id.tolist() == ["taobao", "taobao"]
    assert log.cand_ptr.tolist() == [0, 3, 6]
    assert log.duplicate_decisions == 1


def test_no_temp_files_are_left_and_half_written_temps_are_ignored(tmp_path):
    write(tmp_path, [decision(i) for i in range(5)], [outcome(0)], rotate_rows=2)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    good = sorted(tmp_path.glob("decisions-*.parquet"))[0].read_bytes()
    # What a crash during a write leaves behind: a truncated hidden temporary file.
    (tmp_path / ".decisions-20991231T235959-999999.parquet.123.456.tmp").write_bytes(good[:40])
    log = load_decision_log(tmp_path)
    assert len(log) == 5


def test_a_foreign_parquet_file_is_an_error_naming_it(tmp_path):
    write(tmp_path, [decision(0)])
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "events.parquet")
    with pytest.raises(InvalidInputError, match=r"events\.parquet is not a decision log part"):
        load_decision_log(tmp_path)


def test_a_corrupt_part_is_an_error_naming_it(tmp_path):
    write(tmp_path, [decision(0)])
    part = next(tmp_path.glob("decisions-*.parquet"))
    part.write_bytes(part.read_bytes()[:-30])
    with pytest.raises(LogCorrupt, match=rf"{part.name} fails its checksum"):
        load_decision_log(tmp_path)


def test_unchecked_renamed_and_misshapen_parts_are_refused(tmp_path):
    table = decisions_table([decision(0)])
    name = "decisions-20240101T000000-r0-000000.parquet"
    # a part of schema version 1 (or anyone's Parquet file under a part's name): no digest
    pq.write_table(table.replace_schema_metadata(file_metadata("decisions")), tmp_path / name)
    with pytest.raises(LogCorrupt, match=f"{name} carries no checksum"):
        load_decision_log(tmp_path)

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    data = encode_part(table, PartName("decisions", "r0", 0), "s")
    (renamed / "outcomes-20240101T000000-r0-000000.parquet").write_bytes(data)
    with pytest.raises(LogCorrupt, match="holds decisions of writer 'r0', part 0: its name says"):
        load_decision_log(renamed)
    (renamed / "outcomes-20240101T000000-r0-000000.parquet").unlink()
    (renamed / "decisions-20240101T000000-r1-000000.parquet").write_bytes(data)
    with pytest.raises(LogCorrupt, match="holds decisions of writer 'r0'"):
        load_decision_log(renamed)

    other = tmp_path / "other"
    other.mkdir()
    wrong = encode_part(table.drop_columns(["attrs"]), PartName("decisions", "r0", 0), "s")
    (other / name).write_bytes(wrong)
    with pytest.raises(LogCorrupt, match=r"does not match the decisions schema .*'attrs'"):
        load_decision_log(other)

    invalid = tmp_path / "invalid"
    invalid.mkdir()
    bad = table.set_column(6, DECISION_SCHEMA.field("propensity"), pa.array([0.0]))
    (invalid / name).write_bytes(encode_part(bad, PartName("decisions", "r0", 0), "s"))
    with pytest.raises(LogCorrupt, match=r"holds invalid rows: propensity\[0\] = 0.0"):
        load_decision_log(invalid)


def test_mixed_context_lengths_are_an_error(tmp_path):
    write(tmp_path, [decision(0, context=(1.0, 2.0)), decision(1), decision(2, context=(1.0,))])
    with pytest.raises(
        InvalidInputError, match=r"decision 'r0-2' has 1 features, but .*'r0-0' has 2"
    ):
        load_decision_log(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_decision_log(tmp_path / "nope")


def test_log_arrays_have_checked_shapes(tmp_path):
    write(tmp_path, [decision(0)])
    log = load_decision_log(tmp_path)
    fields = {name: getattr(log, name) for name in log.__dataclass_fields__}
    with pytest.raises(InvalidInputError, match=r"reward has shape \(2,\), \(1,\)"):
        type(log)(**{**fields, "reward": np.zeros(2)})
    with pytest.raises(InvalidInputError, match="cand_ptr is not a CSR pointer"):
        type(log)(**{**fields, "cand_ptr": np.array([0, 2])})


def test_schema_is_documented_field_by_field():
    for f in DECISION_SCHEMA:
        assert f.metadata and f.metadata[b"doc"], f.name


def test_parts_at_the_fast_and_the_former_zstd_level_read_back_identical(tmp_path, monkeypatch):
    """The writer's fast zstd level changes bytes, never values; parts written at the
    former default level (logs kept from before) load the same."""
    rng = np.random.default_rng(5)
    records = []
    for i in range(300):
        p = rng.dirichlet(np.ones(40))
        cands = tuple(f"shop:{k}" for k in rng.choice(10_000, 40, replace=False))
        records.append(decision(
            i, candidates=cands, candidate_probabilities=tuple(p), propensity=float(p[0]),
            arm_id=cands[0], group="mini_shop", context=tuple(rng.standard_normal(8)),
        ))  # fmt: skip
    table = decisions_table(records)
    name = PartName("decisions", "r0", 0)
    fast = encode_part(table, name, "s")
    monkeypatch.setattr(parts, "_DECISIONS_LEVEL", None)  # pyarrow's default: the former
    former = encode_part(table, name, "s")
    assert fast != former  # the level is in force
    logs = []
    for label, data in (("fast", fast), ("former", former)):
        (tmp_path / label).mkdir()
        (tmp_path / label / "decisions-20240101T000000-r0-000000.parquet").write_bytes(data)
        logs.append(load_decision_log(tmp_path / label))
    assert len(logs[0]) == len(logs[1]) == 300
    for field in ("decision_id", "propensity", "cand_ptr", "cand_ids", "cand_prob", "context"):
        assert np.array_equal(getattr(logs[0], field), getattr(logs[1], field)), field
    written = np.concatenate([r.candidate_probabilities for r in records])
    assert np.array_equal(logs[0].cand_prob, written)  # exact: no bit of a float lost
