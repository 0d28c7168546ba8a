"""The allocator's decision log reads back, through the replay loader, with identical values."""

from __future__ import annotations

import numpy as np

from allocator.logs import load_decision_log
from allocator.logs.indexed import IndexedDecision, indexed_table
from allocator.logs.schema import INDEXED_DECISION_SCHEMA
from allocator.serving import Allocator
from tests.serving.helpers import T0, config, context_for

CANDS = ["taobao", "douyin", "merchant:1", "merchant:3"]


def test_logged_decisions_and_outcomes_round_trip(tmp_path):
    kind = "linear_gaussian"
    alloc = Allocator(
        config(kind, reward_wait_s=30.0), seed=3, log_dir=tmp_path, log_rotate_rows=97
    )
    decisions, probs, outcomes = [], [], {}
    for i in range(400):
        d = alloc.decide(
            CANDS,
            context=context_for(kind, i),
            attrs={"slot": f"s{i % 3}"},
            timestamp=T0 + i,
            request_id=f"req{i}",
        )
        decisions.append(d)
        probs.append(alloc.engine.probabilities)
        if i % 4 == 0:
            outcome = {"order": float(i % 8 == 0), "gmv": float(i)}
            alloc.update(d.decision_id, outcome, timestamp=T0 + i + 0.5)
            outcomes[d.decision_id] = outcome
    alloc.expire(T0 + 10_000)
    alloc.close()
    log = load_decision_log(tmp_path)
    assert len(log.decision_id) == 400
    assert list(log.decision_id) == [d.decision_id for d in decisions]
    assert list(log.arm_id) == [d.arm_id for d in decisions]
    np.testing.assert_array_equal(log.propensity, [d.propensity for d in decisions])
    np.testing.assert_array_equal(log.timestamp, [d.timestamp for d in decisions])
    np.testing.assert_array_equal(log.cand_prob, np.concatenate(probs))
    assert list(log.cand_ids[: len(CANDS)]) == CANDS
    np.testing.assert_array_equal(log.context, [context_for(kind, i) for i in range(400)])
    assert log.attrs[5] == {"slot": "s2"} and log.request_id[7] == "req7"
    sources = list(log.outcome_source)
    assert sources.count("feedback") == 100 and sources.count("expired_default") == 300
    for i, d in enumerate(decisions):
        if d.decision_id in outcomes:
            assert log.gmv[i] == outcomes[d.decision_id]["gmv"]
    assert log.duplicate_outcomes == 0 and log.orphan_outcomes == 0
    assert not np.isnan(log.reward).any()


def test_single_rows_fill_each_schema_column_from_the_field_of_its_name():
    """indexed_table takes columns by name: every value lands in its own column, including
    a run mixing context-free and contextual rows and rows with and without attributes."""
    assert IndexedDecision._fields == tuple(INDEXED_DECISION_SCHEMA.names)
    rows = [
        IndexedDecision(
            f"d{i}",
            None if i == 1 else f"q{i}",
            100.0 + i,
            7 + i,
            2 * i,
            0.1 * (i + 1),
            i == 2,
            40 + i,
            f"kind{i}",
            np.arange(i, i + 3, dtype=np.int32),
            np.array([0.5, 0.25, 0.25]) * (i + 1),
            None if i == 0 else np.array([1.0 * i, -2.0]),
            None if i == 2 else {"slot": f"s{i}"},
            ("floor",) * i,
        )
        for i in range(3)
    ]
    table = indexed_table(rows)
    assert table.schema == INDEXED_DECISION_SCHEMA
    for name in INDEXED_DECISION_SCHEMA.names:
        got = table.column(name).to_pylist()
        want = [getattr(r, name) for r in rows]
        if name in ("candidate_indices", "candidate_probabilities", "context"):
            want = [None if v is None else v.tolist() for v in want]
        elif name == "attrs":
            want = [list((v or {}).items()) for v in want]
        elif name == "adjusted_by":
            want = [list(v) for v in want]
        assert got == want, name
