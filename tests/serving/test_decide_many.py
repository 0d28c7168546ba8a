"""``Allocator.decide_many``: one batch-pipeline call that decides what the same requests
would one by one, checks every request before any is decided, and registers them all."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allocator import Allocator, InvalidInputError, UnknownArmError, UpdateStatus
from allocator.logs import load_decision_log
from allocator.serving import AllocatorConfig
from tests.serving.helpers import KINDS, T0, config, context_for, without_epoch

CANDS = ["taobao", "douyin", "merchant:0", "merchant:3", "merchant:5"]
SLOTS = ["top", "feed"]


def requests(kind: str, n: int, start: int = 0) -> list[dict]:
    return [
        {
            "candidates": CANDS[: 2 + (i % 4)],
            "context": context_for(kind, i),
            "attrs": {"slot": SLOTS[i % 2]},
            "timestamp": T0 + start + i,
            "request_id": f"q{start + i}",
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_decide_many_equals_decide_one_by_one(kind):
    raw = config(kind).model_dump(mode="json")
    raw["constraints"]["constraints"][0]["schedule"]["start_value"] = 0.6  # a binding floor
    cfg = AllocatorConfig.model_validate(raw)
    one, many = Allocator(cfg, seed=4), Allocator(cfg, seed=4)
    reqs = requests(kind, 300)
    singles = [one.decide(**r) for r in reqs]
    batch = many.decide_many(reqs)
    assert len(batch) == 300
    assert [without_epoch(i) for i in batch.decision_ids] == [
        without_epoch(d.decision_id) for d in singles
    ]
    assert batch.request_ids == tuple(r["request_id"] for r in reqs)
    np.testing.assert_array_equal(batch.arms, [d.arm_index for d in singles])
    np.testing.assert_array_equal(batch.propensities, [d.propensity for d in singles])
    assert [batch.adjusted_by(r) for r in range(300)] == [d.adjusted_by for d in singles]
    # the floor moved mass somewhere: the comparison covers the contracts
    assert any(d.adjusted_by for d in singles)
    for d in (one, many):
        assert d.metrics()["decisions"] == 300 and d.metrics()["pending"] == 300
    status = many.update(batch.decision_ids[7], {"order": 1.0})
    assert status is UpdateStatus.APPLIED


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ({"candidates": ["taobao", "ghost"]}, UnknownArmError, "ghost"),
        ({"candidates": CANDS, "colour": "red"}, InvalidInputError, r"requests\[3\]: keys"),
        ({"context": None}, InvalidInputError, "keys must be among"),
        ({"candidates": CANDS, "timestamp": float("nan")}, InvalidInputError, "timestamp"),
        ({"candidates": CANDS, "attrs": {"slot": 3}}, InvalidInputError, r"attrs\['slot'\]"),
        ({"candidates": ["taobao", "taobao"]}, InvalidInputError, "appears twice"),
        # a key that is no str is named, not sorted among the others (a raw TypeError once)
        ({"candidates": CANDS, 1: 2}, InvalidInputError,
         r"requests\[3\]: keys must be among .*, got \['candidates', 'timestamp', 1\]"),
        ({"candidates": np.array([], dtype="U1")}, InvalidInputError, "candidates is empty"),
        ({"candidates": CANDS, "timestamp": 10**400}, InvalidInputError,
         r"timestamp = <int of 1,329 bits>: expected epoch seconds"),
    ],
)  # fmt: skip
def test_one_bad_request_rejects_the_batch_and_changes_nothing(bad, error, match):
    alloc, twin = Allocator(config(), seed=5), Allocator(config(), seed=5)
    reqs = requests("beta_bernoulli", 6)
    reqs[3] = {"timestamp": T0 + 3, **bad} if "timestamp" not in bad else bad
    with pytest.raises(error, match=match):
        alloc.decide_many(reqs)
    m = alloc.metrics()
    assert m["decisions"] == 0 and m["pending"] == 0 and m["rejected"] == 1
    good = requests("beta_bernoulli", 20, start=100)
    np.testing.assert_array_equal(alloc.decide_many(good).arms, twin.decide_many(good).arms)


def test_not_a_list_of_mappings_is_a_typed_error():
    alloc = Allocator(config(), seed=1)
    with pytest.raises(InvalidInputError, match="sequence of mappings"):
        alloc.decide_many([CANDS])  # type: ignore[list-item]


def test_decide_many_logs_every_decision_with_its_distribution(tmp_path):
    alloc = Allocator(config(), seed=6, log_dir=tmp_path / "log")
    batch = alloc.decide_many(requests("beta_bernoulli", 50))
    alloc.close()
    log = load_decision_log(tmp_path / "log")
    assert list(log.decision_id) == list(batch.decision_ids)
    np.testing.assert_array_equal(log.propensity, batch.propensities)
    np.testing.assert_allclose(log.cand_prob, batch.probabilities)
    assert list(log.request_id) == [f"q{i}" for i in range(50)]


def test_update_many_applies_all_or_nothing_and_reports_each_item():
    alloc = Allocator(config(), seed=7)
    batch = alloc.decide_many(requests("beta_bernoulli", 10))
    ids = batch.decision_ids
    n_obs = alloc.policy.n_observations.copy()
    for bad, match in (
        ((ids[2], {"gmv": -3.0}), r"feedback\[1\]\.outcome\.gmv"),
        ((ids[2], {"order": 2.0}), "nothing applied.*expects rewards in"),
        ("not a pair", r"feedback\[1\] must be"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            alloc.update_many([(ids[0], {"order": 1.0}), bad, (ids[3], {"order": 1.0})])
        np.testing.assert_array_equal(alloc.policy.n_observations, n_obs)
        assert alloc.metrics()["pending"] == 10
    statuses = alloc.update_many([
        (ids[0], {"order": 1.0}), (ids[0], {"order": 0.0}), ("r0-ffff", {"order": 1.0}),
        (ids[1], {"order": 0.0}),
    ])  # fmt: skip
    assert statuses == [
        UpdateStatus.APPLIED, UpdateStatus.DUPLICATE, UpdateStatus.UNKNOWN, UpdateStatus.APPLIED,
    ]  # fmt: skip
    assert int(alloc.policy.n_observations.sum()) == int(n_obs.sum()) + 2
    assert alloc.update_many([(ids[0], {"order": 1.0})]) == [UpdateStatus.DUPLICATE]
    # an outcome the objective cannot weigh would teach a silent 0
    for empty in (None, {}, {"click": 1.0}):
        with pytest.raises(InvalidInputError, match="none of the fields the objective weighs"):
            alloc.update(ids[5], empty)
    assert alloc.metrics()["pending"] == 8


def _rows(directory, kind):
    """Every row of a closed log's ``kind`` parts, in part order, as dicts."""
    files = sorted(directory.glob(f"{kind}-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()


def _loaded_rows(directory):
    """Every decision of a closed log as the loader reads it back, one dict per round."""
    log = load_decision_log(directory)
    names = ["decision_id", "request_id", "timestamp", "arm_id", "arm_index", "group",
             "propensity", "forced", "model_version", "policy_kind"]  # fmt: skip
    rows = []
    for i in range(len(log)):
        row = {name: getattr(log, name)[i] for name in names}
        cands, adjusted = slice(*log.cand_ptr[i : i + 2]), slice(*log.adj_ptr[i : i + 2])
        rows.append(row | {
            "candidates": log.cand_ids[cands].tolist(), "attrs": log.attrs[i],
            "candidate_probabilities": log.cand_prob[cands].tolist(),
            "context": None if log.context is None else log.context[i].tolist(),
            "adjusted_by": log.adj_names[adjusted].tolist(),
        })  # fmt: skip
    return rows


@pytest.mark.parametrize("kind", ["beta_bernoulli", "shared_linear"])
def test_decide_many_logs_the_rows_one_by_one_decide_logs(tmp_path, kind):
    """The column-built table of a batch (schema 3, catalogue indices) reads back, field by
    field, as the records the single path writes (schema 2, id strings) for the same
    decisions (ids equal up to their epochs)."""
    raw = config(kind).model_dump(mode="json")
    raw["constraints"]["constraints"][0]["schedule"]["start_value"] = 0.6
    cfg = AllocatorConfig.model_validate(raw)
    one = Allocator(cfg, seed=9, log_dir=tmp_path / "one")
    many = Allocator(cfg, seed=9, log_dir=tmp_path / "many")
    reqs = requests(kind, 120)
    reqs[5]["attrs"], reqs[6]["request_id"] = None, None
    for r in reqs:
        one.decide(**r)
    many.decide_many(reqs[:70])
    many.decide_many(reqs[70:])
    one.close(), many.close()
    rows_one, rows_many = _loaded_rows(tmp_path / "one"), _loaded_rows(tmp_path / "many")
    assert len(rows_one) == len(rows_many) == 120
    assert any(r["adjusted_by"] for r in rows_many)
    for a, b in zip(rows_one, rows_many, strict=True):
        assert without_epoch(a.pop("decision_id")) == without_epoch(b.pop("decision_id"))
        assert a == b


def test_a_batch_over_the_capacity_evicts_its_oldest_decisions_in_order(tmp_path):
    """Registration in one slice evicts what registering one at a time would: the oldest
    decisions, each learning the default outcome at the time of the decision that pushed
    it out (logged in that order); the newest stay pending, the evicted are finished."""
    many = Allocator(config(pending_capacity=25, reward_wait_s=1e9), seed=2, log_dir=tmp_path)
    reqs = requests("beta_bernoulli", 100)
    first = many.decide_many(reqs[:10])
    batch = many.decide_many(reqs[10:])
    m = many.metrics()
    assert (m["pending"], m["evicted"], m["decisions"]) == (25, 75, 100)
    ids = list(first.decision_ids) + list(batch.decision_ids)
    arms = np.concatenate([first.arms, batch.arms])
    expected = np.bincount(arms[:75], minlength=many.policy.n_observations.shape[0])
    np.testing.assert_array_equal(many.policy.n_observations, expected)
    assert many.update(ids[-1], {"order": 1.0}) is UpdateStatus.APPLIED
    assert many.update(ids[74], {"order": 1.0}) is UpdateStatus.DUPLICATE
    assert many.update(ids[75], {"order": 1.0}) is UpdateStatus.APPLIED
    many.close()
    outcomes = _rows(tmp_path, "outcomes")
    assert [(r["decision_id"], r["timestamp"], r["source"]) for r in outcomes[:75]] == [
        (ids[k], T0 + k + 25, "expired_default") for k in range(75)
    ]


def _array_requests(alloc: Allocator, n: int, start: int = 0) -> list[dict]:
    """:func:`requests` in the array forms the batch checks whole: int64 indices, float64
    contexts, float timestamps."""
    reqs = requests("shared_linear", n, start)
    for r in reqs:
        r["candidates"] = alloc.registry.lookup(r["candidates"])
        r["context"] = np.asarray(r["context"], dtype=np.float64)
        r["timestamp"] = float(r["timestamp"])
    return reqs


def _state_bytes(alloc: Allocator) -> dict[str, bytes]:
    """Every state array's bytes and the meta values, but the counters (a refusal counts)."""
    arrays, meta = alloc.snapshot_state()
    meta = {k: v for k, v in meta.items() if k != "counters"}
    return {k: np.ascontiguousarray(v).tobytes() for k, v in arrays.items()} | {
        "meta": repr(sorted((k, repr(v)) for k, v in meta.items())).encode()
    }


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("context", np.array([1.0, np.nan, 0.0]), r"context\[1\] = nan: expected a finite"),
        ("context", np.array([1.0, 1e300, 0.0]), r"context\[1\] = 1e\+300: expected \|value\|"),
        ("context", np.zeros(4), r"context has shape \(4,\), expected \(3,\)"),
        ("context", [1.0, 10**400, 0.0], "context holds an integer beyond float64 range"),
        ("context", {"tier": 10**400}, r"context\['tier'\] = <int of 1,329 bits>: expected a fin"),
        ("timestamp", float("nan"), "timestamp = nan: expected epoch seconds"),
        ("timestamp", 1e12, r"requests\[3\]: time 1000000000000.0 is outside"),
        ("timestamp", float(T0 + 10**7), r"requests\[3\]: time .* more than serving.max_time"),
        (
            "candidates",
            np.array([0, 99], dtype=np.int64),
            r"request 3: candidates\[1\] = 99 is not",
        ),
        ("candidates", np.array([0, 0], dtype=np.int64), "appears twice"),
    ],
)
def test_the_array_forms_are_refused_as_the_other_forms_with_state_unchanged(field, value, match):
    """Float64 contexts, float timestamps and int64 indices are checked as whole arrays;
    a bad one is refused with the error the one-by-one checks give (the same request
    named), and the allocator's state stays byte-identical."""
    alloc = Allocator(config("shared_linear"), seed=5)
    alloc.decide_many(_array_requests(alloc, 4, start=-10))  # the jump check has a latest
    before = _state_bytes(alloc)
    errors = []
    for form in ("array", "list"):
        reqs = _array_requests(alloc, 6)
        reqs[3][field] = value if form == "array" else (
            value.tolist() if isinstance(value, np.ndarray) else value
        )  # fmt: skip
        with pytest.raises((InvalidInputError, UnknownArmError), match=match) as err:
            alloc.decide_many(reqs)
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert _state_bytes(alloc) == before
    assert alloc.metrics()["rejected"] == 2


def test_the_array_forms_decide_as_the_list_forms():
    arrays, lists = (
        Allocator(config("shared_linear"), seed=6),
        Allocator(config("shared_linear"), seed=6),
    )
    reqs = _array_requests(arrays, 200)
    a = arrays.decide_many(reqs)
    b = lists.decide_many(requests("shared_linear", 200))
    np.testing.assert_array_equal(a.arms, b.arms)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
