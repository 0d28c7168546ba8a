from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from allocator.launch import view
from allocator.launch.tracking import (
    CellRecord,
    LaunchTracker,
    artifact_root,
    config_hash,
    default_tracking_uri,
    environment_tags,
    flatten,
)


def test_flatten_uses_dotted_keys_and_indexes_lists_of_mappings():
    tree = {"policy": {"kind": "beta", "prior": {"alpha": 1.0}}, "seeds": [1, 2],
            "rules": [{"name": "a"}, {"name": "b"}], "note": "x"}  # fmt: skip
    assert flatten(tree) == {
        "policy.kind": "beta", "policy.prior.alpha": "1.0", "seeds": "[1, 2]",
        "rules.0.name": "a", "rules.1.name": "b", "note": "x",
    }  # fmt: skip


def test_a_mapping_with_keys_mlflow_refuses_stays_one_json_parameter(tmp_path):
    """Patterns (``sells_*``), non-ASCII and over-long keys would fail MLflow's parameter
    name check: their mapping is logged whole, and a real store takes every name."""
    tree = {"policy": {"crosses": {"sells_*": [], "rating": ["bias"]}, "kind": "f"},
            "take_rates": {"caf\u00e9": 0.1}, "deep": {"k" * 260: 1},
            "ok": {"a b:c/d-e.f": 2}}  # fmt: skip
    flat = flatten(tree)
    assert flat == {
        "policy.crosses": '{"sells_*": [], "rating": ["bias"]}', "policy.kind": "f",
        "take_rates": '{"caf\\u00e9": 0.1}', "deep": json.dumps({"k" * 260: 1}),
        "ok.a b:c/d-e.f": "2",
    }  # fmt: skip
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    run = client.create_run(client.create_experiment("e"))
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat.items()])
    assert client.get_run(run.info.run_id).data.params == flat


@pytest.mark.parametrize(
    "inner",
    [
        {"a.b": 1, "a": {"b": 2}},  # two names would be one: neither value may be lost
        {1: "x", "1": "y"},
        {"a": {"b": 2}, "a.b": 1},
        {"r": [{"a": 1}], "r.0.a": 2},
        {"a/": 1},  # MLflow's names are paths in their normal form
        {"a//b": 1},
        {"a/../b": 1},
    ],
)
def test_names_that_clash_or_are_not_paths_keep_their_mapping_whole(tmp_path, inner):
    flat = flatten({"p": inner})
    assert flat == {"p": json.dumps(inner)}
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    run = client.create_run(client.create_experiment("e"))
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat.items()])
    assert client.get_run(run.info.run_id).data.params == flat


def test_a_lists_indices_are_names_mlflow_must_take_too():
    key = "x" * 247  # "p.<key>" is 249 characters, "p.<key>.0" 251
    assert flatten({"p": {key: [{"a": 1}, 5]}}) == {f"p.{key}": '[{"a": 1}, 5]'}


def test_config_hash_ignores_key_order_but_not_values():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_environment_tags_name_commit_hash_and_versions():
    tags = environment_tags({"a": 1})
    assert len(tags["git_commit"]) in (40, 7) or tags["git_commit"] == "unknown"
    assert tags["version.numpy"] == np.__version__
    assert {"config_hash", "python", "version.mlflow", "version.ray"} <= set(tags)


def test_default_store_is_sqlite_in_the_working_directory(tmp_path):
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_artifacts_go_next_to_a_sqlite_store_relative_or_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert artifact_root("sqlite:///sub/mlflow.db") == tmp_path.resolve() / "sub" / "mlartifacts"
    assert artifact_root(f"sqlite:///{tmp_path}/m.db") == tmp_path.resolve() / "mlartifacts"
    assert artifact_root("http://127.0.0.1:5000") is None


def test_a_launch_writes_top_level_cell_runs_and_a_summary(tracking_uri, tmp_path):
    tracker = LaunchTracker("scenario-x", tracking_uri, "L1", tags={"config_hash": "abc"})
    steps = np.arange(5)
    ok = CellRecord(
        "ts/seed=1", {"strategy": "ts", "seed": "1"}, {"policy.kind": "beta"},
        {"value_per_1k": 12.5, "nan_metric": float("nan")},
        {"curve.cum_regret": (steps, np.cumsum(steps * 1.0))},
        texts={"note.txt": "hello"},
    )  # fmt: skip
    bad = CellRecord("ts/seed=2", {"strategy": "ts", "seed": "2"}, {}, error="Traceback\nBoom: x")
    ok_id, bad_id = tracker.log_cell(ok), tracker.log_cell(bad)
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"\x89PNG fake")
    summary_id = tracker.log_summary("summary L1", {"scale": "small"}, [plot],
                                     {"table.txt": "t"}, failed=True)  # fmt: skip

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment(tracker.experiment_id)
    assert exp.name == "scenario-x"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    run = client.get_run(ok_id)
    assert run.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in run.data.tags  # top level, not nested
    assert run.data.tags["launch_id"] == "L1"
    assert run.data.tags["grid.strategy"] == "ts" and run.data.tags["role"] == "cell"
    assert run.data.tags["config_hash"] == "abc"
    assert run.data.params == {"policy.kind": "beta"}
    assert run.data.metrics["value_per_1k"] == 12.5
    assert "nan_metric" not in run.data.metrics
    history = client.get_metric_history(ok_id, "curve.cum_regret")
    assert [(m.step, m.value) for m in history] == [
        (0, 0.0),
        (1, 1.0),
        (2, 3.0),
        (3, 6.0),
        (4, 10.0),
    ]
    assert [a.path for a in client.list_artifacts(ok_id)] == ["note.txt"]
    failed = client.get_run(bad_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"] == "Boom: x"
    summary = client.get_run(summary_id)
    assert summary.data.tags["role"] == "summary" and summary.info.status == "FAILED"
    assert sorted(a.path for a in client.list_artifacts(summary_id)) == ["plot.png", "table.txt"]
    store = tmp_path.resolve()
    assert exp.artifact_location == (store / "mlartifacts").as_uri()  # next to the store
    tracker.publish_view(view.ViewSpec("L1", "grid.strategy", ()), 3)
    hint = tracker.ui_hint(port=5055)
    assert (
        f"--backend-store-uri {tracking_uri} --artifacts-destination {store / 'mlartifacts'}"
        " --host 127.0.0.1 --port 5055" in hint
    )
    assert (
        f"http://127.0.0.1:5055/#/experiments/{exp.experiment_id}/runs?viewStateShareKey="
        f"{tracker.view_key}&compareRunsMode=CHART" in hint
    )
    assert (
        view.SHARE_TAG_PREFIX + str(tracker.view_key)
        in client.get_experiment(exp.experiment_id).tags
    )


def test_reusing_an_experiment_keeps_it_and_tags_it(tracking_uri):
    first = LaunchTracker("same", tracking_uri, "A")
    second = LaunchTracker("same", tracking_uri, "B")
    assert first.experiment_id == second.experiment_id


def test_an_unreachable_server_is_a_config_error(monkeypatch):
    from allocator.errors import ConfigError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(ConfigError, match=r"MLflow tracking URI 'http://127\.0\.0\.1:9'"):
        LaunchTracker("x", "http://127.0.0.1:9")
