"""Catalogues from Parquet / Arrow files: the same allocator as the inline list, and a
malformed file refused with the column and rows named."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allocator import ConfigError, IntIds
from allocator.serving import Allocator
from tests.serving.helpers import T0, config

GROUPS = ["taobao", "douyin", "mini_shop"]


def _table(cfg, ids=None) -> pa.Table:
    arms = cfg.arms
    cols = {
        "id": pa.array([a.id for a in arms] if ids is None else ids),
        "group": pa.array([a.group for a in arms]).dictionary_encode(),
    }
    if arms[0].features is not None:
        cols["features"] = pa.array([a.features for a in arms], pa.list_(pa.float64(), 2))
    return pa.table(cols)


def _write(table: pa.Table, path) -> str:
    if str(path).endswith(".parquet"):
        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    return str(path)


def _with_file(cfg, path) -> dict:
    data = cfg.model_dump()
    data["arms"] = []
    data["arms_file"] = {"path": str(path), "groups": GROUPS}
    return data


@pytest.mark.parametrize("kind", ["beta_bernoulli", "shared_linear"])
@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_a_file_catalogue_decides_as_the_inline_list(tmp_path, kind, suffix):
    cfg = config(kind, n_merchants=40)
    path = _write(_table(cfg), tmp_path / f"arms{suffix}")
    inline, filed = Allocator(cfg, seed=4), Allocator(_with_file(cfg, path), seed=4)
    assert filed.config.arms == [] and filed.registry.all_ids() == inline.registry.all_ids()
    if kind == "shared_linear":
        np.testing.assert_array_equal(filed.policy.state.features, inline.policy.state.features)
    rng = np.random.default_rng(0)
    x = [1.0, 0.2, 1.0] if kind == "shared_linear" else None
    ids = inline.registry.all_ids()
    for r in range(200):
        cands = [ids[i] for i in rng.choice(len(ids), 8, replace=False)]
        a, b = (al.decide(cands, x, timestamp=T0 + r) for al in (inline, filed))
        assert (a.arm_id, a.propensity) == (b.arm_id, b.propensity)
        reward = {"order": float(rng.random() < 0.4)}
        inline.update(a.decision_id, reward, timestamp=T0 + r)
        filed.update(b.decision_id, reward, timestamp=T0 + r)
    filed.reconfigure(_with_file(cfg, path))  # the same file: the catalogue is kept
    assert filed.registry.all_ids() == ids


def test_integer_ids_are_their_decimal_spelling(tmp_path):
    cfg = config("beta_bernoulli", n_merchants=5)
    ids = [10**12 + i for i in range(len(cfg.arms))]
    alloc = Allocator(_with_file(cfg, _write(_table(cfg, ids), tmp_path / "a.parquet")), seed=0)
    d = alloc.decide(IntIds(ids[2:5]), timestamp=T0)
    assert d.arm_id in {str(i) for i in ids[2:5]} and d.arm_index in {2, 3, 4}


def _malformed(cfg, case):
    t = _table(cfg)
    n = t.num_rows
    if case == "missing id":
        return t.drop(["id"])
    if case == "missing features":
        return t.drop(["features"])
    if case == "duplicate id":
        ids = t.column("id").to_pylist()
        ids[7] = ids[3]
        return t.set_column(0, "id", pa.array(ids))
    if case == "unknown group":
        groups = [a.group for a in cfg.arms]
        groups[4] = groups[6] = "mini-shop"
        return t.set_column(1, "group", pa.array(groups))
    if case == "NaN feature":
        feats = [list(a.features) for a in cfg.arms]
        feats[5][1] = float("nan")
        return t.set_column(2, "features", pa.array(feats))
    if case == "null feature":
        feats = [list(a.features) for a in cfg.arms]
        feats[2][0] = None
        return t.set_column(2, "features", pa.array(feats))
    if case == "short features":
        feats = [list(a.features) for a in cfg.arms]
        feats[3] = feats[3][:1]
        return t.set_column(2, "features", pa.array(feats))
    if case == "float ids":
        return t.set_column(0, "id", pa.array(np.arange(n, dtype=np.float64)))
    if case == "integer groups":
        return t.set_column(1, "group", pa.array(np.arange(n)))
    if case == "string features":
        return t.set_column(2, "features", pa.array([["a", "b"]] * n))
    if case == "null id":
        ids = t.column("id").to_pylist()
        ids[1] = None
        return t.set_column(0, "id", pa.array(ids))
    if case == "empty id":
        ids = t.column("id").to_pylist()
        ids[2] = ""
        return t.set_column(0, "id", pa.array(ids))
    if case == "NUL in id":
        ids = t.column("id").to_pylist()
        ids[3] = "a\x00b"
        return t.set_column(0, "id", pa.array(ids))
    if case == "id not UTF-8":  # Parquet takes any bytes its writer marks as text
        ids = [i.encode() for i in t.column("id").to_pylist()]
        ids[4] = b"merchant:\xff"
        return t.set_column(0, "id", pa.array(ids, pa.binary()).view(pa.string()))
    if case == "group not UTF-8":
        groups = [a.group.encode() for a in cfg.arms]
        groups[2] = groups[8] = b"mini_shop\xc3"
        return t.set_column(1, "group", pa.array(groups, pa.binary()).view(pa.string()))
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing id", r"column 'id' is missing"),
        ("missing features", r"column 'features' is missing"),
        ("duplicate id", r"column 'id' repeats ids \['merchant:1'\] at rows \[3, 7\]"),
        (
            "unknown group",
            r"column 'group' names groups \['mini-shop'\] not among .* rows \[4, 6\]",
        ),
        ("NaN feature", r"column 'features' holds NaN or inf at rows \[5\]"),
        ("null feature", r"column 'features' holds empty values at rows \[2\]"),
        ("short features", r"column 'features' must hold 2 values a row: rows \[3\]"),
        ("float ids", r"column 'id' must hold strings or integers, got double"),
        ("integer groups", r"column 'group' must hold strings, got int64"),
        ("string features", r"column 'features' must hold lists of numbers"),
        ("null id", r"column 'id' is empty at rows \[1\]"),
        ("empty id", r"column 'id' is empty or over 256 characters at rows \[2\]"),
        ("NUL in id", r"column 'id' holds a NUL character at rows \[3\]"),
        ("id not UTF-8", r"column 'id' holds text that is not UTF-8 at rows \[4\]"),
        ("group not UTF-8", r"column 'group' holds text that is not UTF-8 at rows \[2, 8\]"),
    ],
)
def test_malformed_files_name_the_column_and_rows(tmp_path, case, match):
    cfg = config("shared_linear", n_merchants=10)
    path = _write(_malformed(cfg, case), tmp_path / "arms.parquet")
    with pytest.raises(ConfigError, match=match):
        Allocator(_with_file(cfg, path), seed=0)


def test_unreadable_files_and_config_errors(tmp_path):
    cfg = config("beta_bernoulli", n_merchants=3)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    text = tmp_path / "arms.csv"
    text.write_text("id,group\n")
    for path, match in [
        (tmp_path / "none.parquet", "cannot be read"),
        (junk, "is not a readable Parquet or Arrow file"),
        (text, "neither a Parquet file nor an Arrow IPC file"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Allocator(_with_file(cfg, path), seed=0)
    both = _with_file(cfg, junk)
    both["arms"] = cfg.model_dump()["arms"]
    with pytest.raises(ConfigError, match="or name an arms_file"):
        Allocator(both, seed=0)
    bad = _with_file(cfg, junk)
    bad["arms_file"]["groups"] = ["taobao", "taobao"]
    with pytest.raises(ConfigError, match="repeats a name"):
        Allocator(bad, seed=0)
    bad["arms_file"]["groups"] = ["douyin"]  # the config's floor targets taobao
    with pytest.raises(ConfigError, match="unknown target group 'taobao'"):
        Allocator(bad, seed=0)


def test_a_corrupt_arrow_file_is_refused_not_read_outside_its_map(tmp_path):
    """An Arrow IPC file is memory-mapped, its buffers used as they are: a string offset
    past its buffer (here 2**30, or one that goes back) once killed the reading process by
    SIGBUS or SIGSEGV. Read in a child process, so that a regression fails this test
    instead of the run."""
    table = pa.table({"id": ["arm-one", "arm-two2"], "group": ["grp", "grp"]})
    _write(table, tmp_path / "good.arrow")
    data = (tmp_path / "good.arrow").read_bytes()
    paths = []
    for column, good, bad in [("id", [0, 7, 15], [0, 7, 2**30]), ("group", [0, 3, 6], [0, 6, 3])]:
        offsets = np.array(good, dtype=np.int32).tobytes()
        assert data.count(offsets) == 1, column
        path = tmp_path / f"corrupt-{column}.arrow"
        path.write_bytes(data.replace(offsets, np.array(bad, dtype=np.int32).tobytes()))
        paths.append(str(path))
    script = textwrap.dedent(
        """
        import sys
        from allocator import ConfigError
        from allocator.arms_file import read_arms_file
        for path in sys.argv[1:]:
            try:
                read_arms_file(path, ["grp"], None)
                print("READ", path)
            except ConfigError as err:
                print("REFUSED", err)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    for path, line in zip(paths, lines, strict=True):
        assert line.startswith(f"REFUSED arms file {path}: is not a readable Parquet or Arrow")


def test_a_catalogue_whose_first_batch_is_empty_reads_its_feature_width(tmp_path):
    """An Arrow file's first record batch may hold no rows; the feature width is the first
    row's wherever it lies (an IndexError before)."""
    from allocator.arms_file import read_catalogue

    schema = pa.schema(
        [("id", pa.string()), ("group", pa.string()), ("features", pa.list_(pa.float64()))]
    )
    empty = pa.record_batch([pa.array([], t) for t in schema.types], schema=schema)
    rows = pa.record_batch(
        [pa.array(["a", "b"]), pa.array(["g", "g"]), pa.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])],
        schema=schema,
    )
    path = tmp_path / "arms.arrow"
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, schema) as writer:
        writer.write_batch(empty)
        writer.write_batch(rows)
    catalogue = read_catalogue(path, with_features=True)
    assert catalogue.registry.n_arms == 2
    assert catalogue.features is not None and catalogue.features.shape == (2, 3)
