"""The comparison view is derived from the launch: its strategies, groups and contracts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from allocator.launch import view
from allocator.launch.runner import SequentialRunner
from allocator.launch.scenario import key_sections, run_scenario
from allocator.launch.tracking import LaunchTracker
from allocator.scenario.config import load_scenario
from allocator.scenario.world import World
from tests.launch.test_scenario_launch import SCENARIO, small_scenario


def three_strategies_one_contract(tmp_path: Path) -> Path:
    """Three strategies, one contract with a single partner floor (douyin), no tilt."""
    path = small_scenario(tmp_path, [1], ope_target=None)
    data = yaml.safe_load(path.read_text())
    data["contracts"] = {
        "douyin_only": {
            "window": 500,
            "constraints": [
                {"name": "douyin_floor", "kind": "floor", "target": {"group": "douyin"},
                 "schedule": {"start": "2025-10-01T00:00:00Z", "end": "2025-12-01T00:00:00Z",
                              "start_value": 0.2}},
            ],
        }
    }  # fmt: skip
    keep = {"static_split", "beta_ts", "contextual_ts_protected"}
    data["strategies"] = [s for s in data["strategies"] if s["name"] in keep]
    data["strategies"][-1]["contracts"] = "douyin_only"
    path.write_text(yaml.safe_dump(data))
    return path


def shared_view(uri: str, experiment_id: str, key: str) -> dict:
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    return view.decode(tags[view.SHARE_TAG_PREFIX + key])


def charted(state: dict) -> dict[str, list[str]]:
    """Section name -> the metric keys of its charts, in order."""
    names = {s["uuid"]: s["name"] for s in state["compareRunSections"]}
    out: dict[str, list[str]] = {name: [] for name in names.values()}
    for card in state["compareRunCharts"]:
        out[names[card["metricSectionId"]]] += card.get("selectedMetricKeys", [card["metricKey"]])
    return out


def test_the_bundled_scenario_gets_a_floor_chart_per_partner_floor_and_the_mini_shop():
    scenario = load_scenario(SCENARIO)
    world = World(scenario.world.model_copy(update={"mini_shop": scenario.world.mini_shop.
                  model_copy(update={"n_merchants": 50})}), seed=1)  # fmt: skip
    sections = {s.name: [c.metrics for c in s.charts] for s in key_sections(scenario, world)}
    assert list(sections) == ["Value and regret", "Partner floors: share against floor",
                              "Mini Shop", "Protection cost"]  # fmt: skip
    assert sections["Partner floors: share against floor"] == [
        ("curve.share.taobao", "curve.floor.taobao_protected"),
        ("curve.share.douyin", "curve.floor.douyin_apparel_beauty"),
        ("curve.share.pinduoduo", "curve.floor.pinduoduo_protected"),
    ]
    # where the end's regret is: merchants passed over, or the wrong merchant served
    assert sections["Mini Shop"] == [
        ("curve.share.mini_shop",), ("share_end.mini_shop",),
        ("regret_end_per_1k.missed.mini_shop",), ("regret_end_per_1k.within.mini_shop",),
    ]  # fmt: skip


@pytest.mark.heavy
def test_a_launch_with_three_strategies_and_one_contract_gets_its_own_view(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_scenario(three_strategies_one_contract(tmp_path), SequentialRunner(progress=False),
                       "small", uri, tmp_path / "runs", "three", impressions=1500)  # fmt: skip
    assert out.exit_code == 0, out.failed
    printed = capsys.readouterr().out
    key = printed.split("viewStateShareKey=")[1].split("&")[0]
    state = shared_view(uri, out.experiment_id, key)
    sections = charted(state)
    assert list(sections)[:4] == ["Value and regret", "Partner floors: share against floor",
                                  "Mini Shop", "Protection cost"]  # fmt: skip
    assert sections["Partner floors: share against floor"] == [
        "curve.share.douyin",
        "curve.floor.douyin_floor",
    ]
    assert sections["Protection cost"] == ["protection_cost_per_1k"]
    # every group shown, this launch only, grouped by strategy with the mean and min-max
    assert state["runsHiddenMode"] == "SHOW_ALL"
    assert state["searchFilter"] == "tags.launch_id = 'three'"
    by = [{"mode": "tag", "groupByData": "grid.strategy"}]
    assert state["groupBy"] == {"aggregateFunction": "average", "groupByKeys": by}
    assert all(c["runsCountToCompare"] >= 10 for c in state["compareRunCharts"])
    # every metric the launch logged is charted exactly once, and nothing else is
    client = MlflowClient(uri)
    runs = client.search_runs([out.experiment_id], "tags.role = 'cell'")
    assert sorted(r.data.tags["grid.strategy"] for r in runs) == [
        "beta_ts",
        "contextual_ts_protected",
        "static_split",
    ]
    logged = set().union(*(r.data.metrics for r in runs))
    keys = [k for ks in sections.values() for k in ks]
    assert len(keys) == len(set(keys)) and set(keys) == logged
    assert not any(k.startswith("curve.floor.taobao") or "douyin_apparel" in k for k in logged)


def test_outside_the_checked_mlflow_range_the_hint_says_so_and_gives_the_plain_link(
    tracking_uri, monkeypatch
):
    tracker = LaunchTracker("x", tracking_uri, "L")
    monkeypatch.setattr(view, "ui_supports_shared_views", lambda: "MLflow 9.0 is outside")
    tracker.publish_view(view.ViewSpec("L", "grid.strategy", ()), 3)
    hint = tracker.ui_hint(5055)
    assert "comparison view not saved: MLflow 9.0 is outside" in hint
    assert hint.endswith(f"/#/experiments/{tracker.experiment_id}/runs?compareRunsMode=CHART")
    tags = MlflowClient(tracking_uri).get_experiment(tracker.experiment_id).tags
    assert not any(k.startswith(view.SHARE_TAG_PREFIX) for k in tags)


@pytest.mark.parametrize(
    ("version", "ok"), [("3.17.2", True), ("3.17.0", True), ("3.16.1", False), ("4.0.0", False)]
)
def test_the_pinned_mlflow_range(version, ok):
    assert (view.ui_supports_shared_views(version) is None) == ok


def test_the_tag_value_round_trips_and_fits_mlflow_s_limit():
    spec = view.ViewSpec("L'1", "grid.policy", tuple(view.remaining_sections(
        [f"m{i}.x" for i in range(300)], [f"curve.c{i}" for i in range(100)], [])))  # fmt: skip
    state = view.ui_state(spec, 40)
    value = view.encode(state)
    assert view.decode(value) == state and len(value) < 20_000
    assert state["searchFilter"] == "tags.launch_id = 'L''1'"
