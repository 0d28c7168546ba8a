"""Schema 3: decisions as catalogue indices, read back exactly as schema 2; a v2 log as it
was written; malformed catalogues and indices refused naming the part, column and row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allocator import ArmRegistry
from allocator.errors import LogCorrupt
from allocator.logs import DecisionLogWriter, load_decision_log
from allocator.logs.parts import encode_part, parse_name, read_part
from allocator.logs.tables import check_table
from allocator.policies import make_policy
from allocator.replay import evaluate, from_decision_log, replay_nonstationary
from allocator.serving import Allocator
from allocator.serving.log_rows import LoggedCatalogue
from tests.logs.helpers import copy_outcomes, decision, v2_record
from tests.logs.make_v2_log import as_json
from tests.serving.helpers import T0, config, context_for, without_epoch

V2_LOG = Path(__file__).parent / "v2_log"
KIND = "linear_gaussian"
CANDS = ["taobao", "douyin", "merchant:0", "merchant:2", "merchant:3", "merchant:5"]


def _requests(n: int) -> list[dict]:
    return [
        {"candidates": CANDS[: 2 + i % 5], "context": context_for(KIND, i),
         "attrs": {"slot": f"s{i % 2}"}, "timestamp": T0 + i, "request_id": f"q{i}"}
        for i in range(n)
    ]  # fmt: skip


def _run(directory: Path, batched: bool, n: int = 300, v2: Path | None = None) -> None:
    """One seeded run, logged as schema 3 by the single path or the batch path; with
    ``v2``, the single path's decisions are also written there as schema-2 records (with
    the run's outcomes, once it is closed): the same run as a version-2 log."""
    alloc = Allocator(config(KIND, reward_wait_s=1e6), seed=11, log_dir=directory)
    reqs = _requests(n)
    old = None if v2 is None else DecisionLogWriter(v2, replica="v2")
    if batched:
        ids = [
            d for lo in range(0, n, 64) for d in alloc.decide_many(reqs[lo : lo + 64]).decision_ids
        ]
    else:
        ids = []
        for r in reqs:
            d = alloc.decide(**r)
            ids.append(d.decision_id)
            if old is not None:
                old.write_decision(v2_record(d, r, alloc.engine.probabilities, KIND))
    for i, decision_id in enumerate(ids):
        if i % 3:
            alloc.update(decision_id, {"order": float(i % 5 == 0), "gmv": float(i % 7)},
                         timestamp=T0 + n + i)  # fmt: skip
    alloc.expire(T0 + 2e6)
    alloc.close()
    if old is not None:
        copy_outcomes(directory, old)
        old.close()


def _versions(directory: Path) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for path in directory.glob("*.parquet"):
        meta = pq.read_metadata(path).metadata
        out.setdefault(path.name.split("-")[0], set()).add(int(meta[b"entry_alloc.schema_version"]))
    return out


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    """The same run as a v2 log, and as v3 logs of the single and the batch path."""
    root = tmp_path_factory.mktemp("v2v3")
    _run(root / "single", batched=False, v2=root / "v2")
    _run(root / "batch", batched=True)
    return {name: root / name for name in ("v2", "single", "batch")}


def test_a_version_2_log_reads_back_as_the_version_2_loader_read_it():
    expected = json.loads((V2_LOG / "expected.json").read_text())
    assert as_json(load_decision_log(V2_LOG)) == expected
    assert _versions(V2_LOG) == {"decisions": {2}, "outcomes": {2}}


@pytest.mark.parametrize("path", ["single", "batch"])
def test_the_same_run_logged_as_v2_and_v3_replays_to_identical_results(logs, path):
    v2, v3 = logs["v2"], logs[path]
    assert _versions(v2)["decisions"] == {2} and "catalogue" not in _versions(v2)
    assert _versions(v3) == {"catalogue": {3}, "decisions": {3}, "outcomes": {3}}
    a, b = load_decision_log(v2), load_decision_log(v3)
    assert [without_epoch(i) for i in a.decision_id] == [without_epoch(i) for i in b.decision_id]
    names = ("arm_id", "arm_index", "group", "cand_ptr", "cand_ids", "cand_prob", "context",
             "propensity", "reward", "adj_ptr", "adj_names", "forced", "timestamp")  # fmt: skip
    for name in names:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        if x.dtype == object:
            assert x.tolist() == y.tolist(), name
        else:
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert a.attrs == b.attrs and a.arm_index.dtype == np.int64
    da, db = (from_decision_log(x, reward="order") for x in (a, b))
    for name in ("actions", "rewards", "pscores", "cand_ptr", "cand_idx", "cand_prob", "contexts"):
        assert np.array_equal(getattr(da, name), getattr(db, name)), name
    assert da.arm_ids == db.arm_ids and da.arm_groups == db.arm_groups
    for interval in ("cs", "bootstrap"):
        ea, eb = (
            evaluate(d, "uniform", reward_model="ridge", interval=interval,
                     rng=np.random.default_rng(5))
            for d in (da, db)
        )  # fmt: skip
        assert ea.estimates == eb.estimates and ea.diagnostics == eb.diagnostics
        assert len(ea.estimates) >= 4 and all(np.isfinite(e.value) for e in ea.estimates.values())
    ra, rb = (
        replay_nonstationary(
            make_policy({"kind": "beta_bernoulli"}, ArmRegistry.build(list(d.arm_ids),
                        list(d.arm_groups or ())), 3),
            d, np.random.default_rng(8), reward_model=None,
        )
        for d in (da, db)
    )  # fmt: skip
    assert ra.n_accepted > 50
    fields = ("value", "low", "high", "n_accepted", "acceptance_rate", "ess")
    assert [getattr(ra, f) for f in fields] == [getattr(rb, f) for f in fields]


def _decision_rows(directory: Path) -> pa.Table:
    parts = sorted(directory.glob("decisions-*"), key=lambda p: parse_name(p.name).seq)
    return pa.concat_tables([pq.read_table(p) for p in parts])


def test_single_decisions_log_the_rows_the_batch_path_logs(tmp_path):
    """Row for row, column for column what ``decide_many`` writes for the same decisions,
    but for the decision ids and the catalogue epoch (random per writer)."""
    root = tmp_path
    _run(root / "single", batched=False, n=70)
    _run(root / "batch", batched=True, n=70)
    single, batch = (_decision_rows(root / name) for name in ("single", "batch"))
    assert single.schema == batch.schema and single.num_rows == 70
    assert _versions(root / "single") == _versions(root / "batch")
    same = [f for f in single.schema.names if f not in ("decision_id", "catalogue")]
    assert single.select(same).equals(batch.select(same))
    assert (
        single.column("catalogue").unique().to_pylist()
        != batch.column("catalogue").unique().to_pylist()
    )


@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_v3_log_is_smaller_than_the_same_v2_log(logs, path):
    v2, v3 = logs["v2"], logs[path]
    size = {d: sum(p.stat().st_size for p in d.glob("decisions-*")) for d in (v2, v3)}
    assert size[v3] < size[v2]


def _epoch_log(directory: Path) -> None:
    """Two registries numbering the same ids differently, logged in turn by one writer:
    index 0 names ``a`` in the first epoch and ``c`` in the second."""
    first = ArmRegistry.build(["a", "b", "c"], ["g1", "g1", "g2"])
    second = ArmRegistry.build(["c", "a", "b"], ["g2", "g1", "g1"])
    cat = LoggedCatalogue()
    with DecisionLogWriter(directory) as w:
        for registry, arm in ((first, 0), (second, 0), (first, 2)):
            epoch = cat.of(registry, w)
            w.write_table("decisions", pa.table({
                "decision_id": [f"d{arm}-{epoch}"], "request_id": [None],
                "timestamp": [T0], "catalogue": [epoch], "arm_index": [arm],
                "propensity": [0.75], "forced": [False], "model_version": [1],
                "policy_kind": ["beta_bernoulli"], "candidate_indices": [[arm, 1]],
                "candidate_probabilities": [[0.75, 0.25]], "context": [None],
                "attrs": pa.array([[]], pa.map_(pa.string(), pa.string())),
                "adjusted_by": [[]],
            }))  # fmt: skip


def test_an_index_names_one_id_per_epoch_and_growing_keeps_the_epoch(tmp_path):
    _epoch_log(tmp_path)
    log = load_decision_log(tmp_path)
    assert log.arm_id.tolist() == ["a", "c", "c"]  # index 0, 0 and 2 of their epochs
    assert log.group.tolist() == ["g1", "g2", "g2"]
    assert log.cand_ids.tolist() == ["a", "b", "c", "a", "c", "b"]
    catalogue = pq.read_table(sorted(tmp_path.glob("catalogue-*"))).to_pydict()
    assert len(catalogue["arm_id"]) == 9 and len(set(catalogue["epoch"])) == 3

    registry = ArmRegistry.build(["a", "b"], ["g", "g"])
    cat = LoggedCatalogue()
    with DecisionLogWriter(tmp_path / "grow") as w:
        epoch = cat.of(registry, w)
        registry.add(["c"], "g")
        registry.retire(["a"])
        assert cat.of(registry, w) == epoch  # appended: index 2, same epoch
        grown = registry.copy()
        grown.add(["d"], "h")
        assert cat.of(grown, w) == epoch  # a staged copy numbers the logged arms alike
        restored = ArmRegistry.from_arrays(grown.to_arrays())
        assert cat.of(restored, w) == epoch  # so does one restored from a snapshot
        regrouped = ArmRegistry.build(["a", "b", "c", "d"], ["g", "g", "h", "h"])
        second = cat.of(regrouped, w)
        assert second != epoch  # same ids, another group: a new numbering
        assert cat.of(grown, w) not in (epoch, second)  # and back: a new epoch again
    with DecisionLogWriter(tmp_path / "grow") as w:
        assert cat.of(grown, w) != epoch  # a new writer (a restart): a new epoch
    rows = pq.read_table(sorted((tmp_path / "grow").glob("catalogue-*"))).to_pydict()
    assert rows["arm_index"] == [0, 1, 2, 3] * 4 and rows["arm_id"] == ["a", "b", "c", "d"] * 4
    assert rows["group"][4:8] == ["g", "g", "h", "h"] and rows["epoch"][:4] == [epoch] * 4
    assert len(set(rows["epoch"])) == 4


def _rewrite(directory: Path, kind: str, change) -> None:
    """Replace the first ``kind`` part by ``change(its rows)``, re-encoded with a valid
    digest (a forged part: only the content checks can catch it)."""
    path = sorted(directory.glob(f"{kind}-*.parquet"))[0]
    name = parse_name(path.name)
    assert name is not None
    path.write_bytes(encode_part(change(read_part(path).table), name, "forged"))


def _set(t: pa.Table, name: str, row: int, value: object) -> pa.Table:
    values = t.column(name).to_pylist()
    values[row] = value
    i = t.schema.get_field_index(name)
    return t.set_column(i, t.schema.field(name), pa.array(values, t.schema.field(name).type))


def _other(value: int | None, chosen: bool = False):
    """Decision rows whose last candidate that was not chosen (or the chosen one, with
    ``chosen``) becomes ``value`` (None: is dropped)."""

    def change(t: pa.Table) -> pa.Table:
        row = 3
        arm = t.column("arm_index")[row].as_py()
        cands = t.column("candidate_indices")[row].as_py()
        at = cands.index(arm) if chosen else max(i for i, c in enumerate(cands) if c != arm)
        cands = [c for i, c in enumerate(cands) if i != at or value is not None]
        if value is not None:
            cands[at] = value
        t = _set(t, "candidate_indices", row, cands)
        return _set(t, "arm_index", row, value) if chosen else t

    return change


def _damage(directory: Path, kind: str) -> None:
    path = sorted(directory.glob(f"{kind}-*.parquet"))[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


BAD_V3 = [
    (lambda d: sorted(d.glob("catalogue-*"))[0].unlink(),
     r"decisions-\S+ catalogue\[0\] = \d+: no intact catalogue part of this epoch"),
    (lambda d: _damage(d, "catalogue"), r"catalogue-\S+ fails its checksum"),
    (lambda d: _rewrite(d, "decisions", _other(8)),
     r"decisions-\S+ candidate_indices\[3\] = 8: outside catalogue epoch \d+, which names 8"),
    (lambda d: _rewrite(d, "decisions", _other(40, chosen=True)),
     r"decisions-\S+ arm_index\[3\] = 40: outside catalogue epoch \d+, which names 8 ids"),
    (lambda d: _rewrite(d, "decisions", _other(-1)),
     r"decisions-\S+ holds invalid rows: candidate_indices\[3\] = .*catalogue indices >= 0"),
    (lambda d: _rewrite(d, "decisions", _other(None)),
     r"decisions-\S+ holds invalid rows: candidate_probabilities\[3\] = .*one probability per"),
    (lambda d: _rewrite(d, "catalogue", lambda t: _set(t, "arm_id", 5, "taobao")),
     r"catalogue-\S+ catalogue epoch \d+: arm_id 'taobao' is listed twice"),
    (lambda d: _rewrite(d, "catalogue", lambda t: _set(t, "arm_index", 6, 2)),
     r"catalogue-\S+ catalogue epoch \d+: index 2 is listed twice, naming "
     r"\['merchant:0', 'merchant:4'\]"),
    (lambda d: _rewrite(d, "catalogue", lambda t: pa.concat_tables([t.slice(0, 3), t.slice(4)])),
     r"catalogue-\S+ catalogue epoch \d+: index 3 is missing"),
    (lambda d: _rewrite(d, "catalogue", lambda t: pa.concat_tables(
        [t, _set(t.slice(2, 1), "group", 0, "other")])),
     r"catalogue-\S+ catalogue epoch \d+: index 2 is listed twice, naming \['merchant:0'\]"),
    (lambda d: _rewrite(d, "catalogue", lambda t: _set(t, "group", 1, "")),
     r"catalogue-\S+ holds invalid rows: group\[1\] = '': expected a non-empty string"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "match"), BAD_V3)
def test_a_malformed_v3_log_is_refused_naming_part_column_and_row(logs, tmp_path, damage, match):
    directory = tmp_path / "log"
    shutil.copytree(logs["batch"], directory)
    good = len(load_decision_log(directory))
    damage(directory)
    with pytest.raises(LogCorrupt, match=match):
        load_decision_log(directory)
    skipped = load_decision_log(directory, on_damaged="skip")
    assert len(skipped) < good and skipped.damaged  # the decisions it cannot name are left out


def test_catalogue_rows_written_again_whole_read_as_once(logs, tmp_path):
    """A writer writes again the catalogue parts a replaced directory lost: identical rows
    (in the same part or another) name what they named once."""
    directory = tmp_path / "log"
    shutil.copytree(logs["batch"], directory)
    good = load_decision_log(directory)
    _rewrite(directory, "catalogue", lambda t: pa.concat_tables([t, t.slice(2, 3), t]))
    again = load_decision_log(directory)
    assert not again.damaged
    for name in ("decision_id", "arm_id", "arm_index", "group", "cand_ptr", "cand_ids"):
        assert getattr(again, name).tolist() == getattr(good, name).tolist(), name


@pytest.mark.parametrize(
    "ids", [["jd", "shop:7"], ["jd", "café", "shop:7"], ["jd", "小店:1", "café"]]
)
def test_catalogue_ids_are_the_registry_ids_in_every_encoding(tmp_path, ids):
    """ASCII, Latin-1 and wider ids (the registry stores them one or four bytes wide)."""
    registry = ArmRegistry.build(ids[:1], ["p"])
    cat = LoggedCatalogue()
    with DecisionLogWriter(tmp_path) as w:
        cat.of(registry, w)
        registry.add(ids[1:], "m")
        cat.of(registry, w)
    rows = pq.read_table(sorted(tmp_path.glob("catalogue-*"))).to_pydict()
    assert rows["arm_id"] == ids and rows["group"] == ["p"] + ["m"] * (len(ids) - 1)


def test_catalogue_rows_are_not_traffic_and_versions_share_a_stream_in_order(tmp_path):
    """A catalogue of any size neither fills the bounds nor makes the caller write; v2
    records and v3 tables buffered together become parts of one version each, in order."""
    registry = ArmRegistry.build([f"m{i}" for i in range(50)], ["g"] * 50)
    with DecisionLogWriter(tmp_path, rotate_rows=4, max_buffered_rows=8) as w:
        epoch = LoggedCatalogue().of(registry, w)
        assert w.buffered_rows == 0 and not w.full
        row = {
            "decision_id": ["v3"],
            "request_id": ["q"],
            "timestamp": [T0],
            "catalogue": [epoch],
            "arm_index": [49],
            "propensity": [1.0],
            "forced": [False],
            "model_version": [0],
            "policy_kind": ["beta_bernoulli"],
            "candidate_indices": [[49]],
            "candidate_probabilities": [[1.0]],
            "context": [None],
            "attrs": pa.array([[]], pa.map_(pa.string(), pa.string())),
            "adjusted_by": [[]],
        }
        w.write_decision(decision(0, decision_id="first"))
        w.write_rows("decisions", check_table("decisions", pa.table(row)))
        w.write_decision(decision(1, decision_id="last"))
        assert w.buffered_rows == 3
    assert load_decision_log(tmp_path).decision_id.tolist() == ["first", "v3", "last"]
    assert load_decision_log(tmp_path).arm_id.tolist() == ["taobao", "m49", "taobao"]
    versions = [pq.read_metadata(p).metadata[b"entry_alloc.schema_version"]
                for p in sorted(tmp_path.glob("decisions-*"))]  # fmt: skip
    assert versions == [b"2", b"3", b"2"]


def test_every_sampled_bit_flip_of_a_v3_log_is_refused_naming_the_part(logs, tmp_path):
    """A flipped catalogue part also leaves out, reported, the decisions it named. The run
    may have been flushed as several parts (the flush is on the wall clock): exactly the
    rows of the decisions parts reported damaged are left out."""
    directory = tmp_path / "log"
    shutil.copytree(logs["batch"], directory)
    full = len(load_decision_log(directory))
    rows = {p.name: pq.read_metadata(p).num_rows for p in directory.glob("decisions-*")}
    rng = np.random.default_rng(21)
    flips = 0
    for part in sorted(directory.glob("*.parquet")):
        good = part.read_bytes()
        for pos in rng.choice(len(good), size=8, replace=False):
            bad = bytearray(good)
            bad[pos] ^= 1 << int(rng.integers(8))
            part.write_bytes(bytes(bad))
            with pytest.raises(LogCorrupt, match=part.name):
                load_decision_log(directory)
            skipped = load_decision_log(directory, on_damaged="skip")
            damaged = [d.part for d in skipped.damaged]
            assert damaged[0] == part.name
            assert len(skipped) == full - sum(rows.get(d, 0) for d in damaged)
            if part.name.startswith("catalogue-"):
                assert damaged[1:] and all(d.startswith("decisions-") for d in damaged[1:])
            else:
                assert damaged == [part.name]
            flips += 1
        part.write_bytes(good)
    assert flips == 8 * len(list(directory.glob("*.parquet"))) >= 24
    assert len(load_decision_log(directory)) == full
