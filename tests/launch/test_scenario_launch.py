"""The main job end to end: the bundled scenario on local Ray, tracked in a real MLflow store."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from allocator.cli import main
from allocator.launch.runner import RayRunner, SequentialRunner
from allocator.launch.scenario import run_scenario
from allocator.scenario.build import grid_cells
from allocator.scenario.config import ScenarioConfig, load_scenario
from allocator.scenario.simulate import Shared, run_cell
from allocator.scenario.world import World
from tests.scenario.faults import FailingCell

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "configs" / "wechat_entry.yaml"
STRATEGIES = ["static_split", "ab_then_commit", "eps_greedy", "beta_ts", "contextual_ts",
              "contextual_ts_protected", "value_ts_protected", "oracle"]  # fmt: skip
RECOMMENDED = "value_ts_protected"  # the recommended policy of the bundled scenario


def small_scenario(tmp_path: Path, seeds: list[int], **experiment: object) -> Path:
    """The bundled scenario with fewer merchants and seeds (same structure)."""
    data = yaml.safe_load(SCENARIO.read_text())
    data["world"].setdefault("mini_shop", {})["n_merchants"] = 300
    data["experiment"].update({"seeds": seeds, "curve_points": 12, "ope_bootstrap": 20,
                               **experiment})  # fmt: skip
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.heavy
def test_the_main_job_on_local_ray_tracks_every_cell_and_a_summary(
    tmp_path, tracking_uri, ray_local
):
    cfg = small_scenario(tmp_path, [1, 2])
    buf = io.StringIO()
    out = run_scenario(cfg, RayRunner(ray_module=ray_local, progress=False), "small",
                       tracking_uri, tmp_path / "runs", "e2e", impressions=3000,
                       stream=buf)  # fmt: skip
    assert out.exit_code == 0, out.failed
    assert sorted(r["strategy"] for r in out.rows) == sorted(STRATEGIES)
    assert out.rows[0]["strategy"] == "oracle"  # the ceiling ranks first
    printed = buf.getvalue()
    assert "value/1k" in printed and "floor slack" in printed and "regret/1k" in printed
    assert "compareRunsMode=CHART" in printed and "mlflow ui --backend-store-uri" in printed

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment(out.experiment_id)
    assert exp.name == "wechat_entry"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    cells = [r for r in runs if r.data.tags.get("role") == "cell"]
    assert len(cells) == 2 * len(STRATEGIES)
    assert all("mlflow.parentRunId" not in r.data.tags for r in runs)
    assert {(r.data.tags["grid.strategy"], r.data.tags["grid.seed"]) for r in cells} == {
        (s, str(seed)) for s in STRATEGIES for seed in (1, 2)
    }
    for r in cells:
        assert r.info.status == "FINISHED"
        assert r.data.tags["launch_id"] == "e2e"
        assert len(r.data.tags["git_commit"]) >= 7 and "config_hash" in r.data.tags
        assert r.data.params["strategy.kind"] == r.data.tags["grid.kind"]
        assert r.data.params["world.mini_shop.n_merchants"] == "300"
        m = r.data.metrics
        for key in ("value_per_1k", "revenue_per_1k", "gmv_per_1k", "conversion",
                    "regret_per_1k", "share_end.mini_shop"):  # fmt: skip
            assert np.isfinite(m[key]), key
        assert m["impressions"] == 3000
        hist = client.get_metric_history(r.info.run_id, "curve.cum_regret")
        assert [h.step for h in hist] == list(range(12))
        assert client.get_metric_history(r.info.run_id, "curve.share.mini_shop")
    protected = next(r for r in cells if r.data.tags["grid.strategy"] == RECOMMENDED)
    assert "contracts.constraints.0.name" in protected.data.params
    assert client.get_metric_history(protected.info.run_id, "curve.floor.taobao_protected")
    assert "contract.taobao_protected.cost" in protected.data.metrics
    assert "ope.ips.value" in protected.data.metrics and "ope.truth" in protected.data.metrics
    summary = [r for r in runs if r.data.tags.get("role") == "summary"]
    assert len(summary) == 1 and summary[0].info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(summary[0].info.run_id)}
    assert {"summary.csv", "summary.txt", "config.json", "cumulative_regret.png",
            "group_shares.png"} <= artifacts  # fmt: skip
    assert (out.out_dir / "group_shares.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.heavy
def test_a_cell_that_raises_is_a_failed_run_and_a_failing_exit(tmp_path, tracking_uri, ray_local):
    cfg = small_scenario(tmp_path, [1])
    runner = FailingCell(RayRunner(ray_module=ray_local, progress=False), "beta_ts/seed=1")
    buf = io.StringIO()
    out = run_scenario(cfg, runner, "small", tracking_uri, tmp_path / "runs", "bad",
                       impressions=2000, stream=buf)  # fmt: skip
    assert out.exit_code == 1
    assert out.failed == ["beta_ts/seed=1: RuntimeError: injected failure in cell beta_ts/seed=1"]
    assert "1 cell(s) FAILED" in buf.getvalue() and "injected failure" in buf.getvalue()
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([out.experiment_id])
    status = {r.data.tags.get("grid.strategy", "summary"): r.info.status for r in runs}
    assert status["beta_ts"] == "FAILED" and status["summary"] == "FAILED"
    assert all(v == "FINISHED" for k, v in status.items() if k not in ("beta_ts", "summary"))
    failed = next(r for r in runs if r.data.tags.get("grid.strategy") == "beta_ts")
    assert "injected failure" in failed.data.tags["error"]
    beta_row = next(r for r in out.rows if r["strategy"] == "beta_ts")
    assert beta_row["failed"] == 1 and beta_row["seeds"] == 0


@pytest.mark.heavy
def test_ray_and_sequential_runners_give_identical_cells(tmp_path, ray_local):
    scenario = load_scenario(small_scenario(tmp_path, [3]))
    world = World(scenario.world, seed=scenario.experiment.world_seed)
    cells = [c for c in grid_cells(scenario, world, 2500)
             if c.strategy in ("beta_ts", RECOMMENDED, "static_split")]  # fmt: skip
    shared = Shared(world, scenario)
    seq = SequentialRunner(progress=False).run(run_cell, cells, shared)
    par = RayRunner(ray_module=ray_local, progress=False).run(run_cell, cells, shared)
    for a, b in zip(seq, par, strict=True):
        assert a.ok and b.ok
        diff = {k for k, v in a.value.metrics.items() if v != b.value.metrics[k]}
        assert diff == set(), {k: (a.value.metrics[k], b.value.metrics[k]) for k in diff}
        for key, (_steps, values) in a.value.curves.items():
            np.testing.assert_array_equal(values, b.value.curves[key][1])


def _cell_metrics(scenario: ScenarioConfig, names: list[str], n: int, seed: int = 1) -> dict:
    world = World(scenario.world, seed=scenario.experiment.world_seed)
    cells = {c.strategy: c for c in grid_cells(scenario, world, n) if c.seed == seed}
    return {name: run_cell(Shared(world, scenario), cells[name]).metrics for name in names}


@pytest.mark.heavy
def test_the_constrained_strategy_keeps_every_partner_floor_on_every_window():
    """Worst sliding-window slack within the layer's documented bound −(B+2)/W."""
    scenario = load_scenario(SCENARIO)
    scenario = scenario.model_copy(
        update={"experiment": scenario.experiment.model_copy(update={"ope_target": None})}
    )
    m = _cell_metrics(scenario, [RECOMMENDED, "contextual_ts"], 60_000)
    cset = scenario.contracts["protected"]
    bound = -(cset.backstop + 2) / cset.window
    floors = [
        c.name for c in cset.constraints if c.kind == "floor" and "group" in c.target.model_dump()
    ]
    assert len(floors) == 3
    for name in floors:
        prot = m[RECOMMENDED]
        assert prot[f"floor.{name}.impressions"] >= 5 * cset.window
        assert prot[f"floor.{name}.worst_slack"] >= bound, name
        # the layer's own books agree with the re-measurement from served groups
        assert prot[f"floor.{name}.worst_slack"] == pytest.approx(
            prot[f"contract.{name}.layer_worst_slack"], abs=2e-3
        )
    # without contracts the same policy breaks at least one floor clearly
    free = m["contextual_ts"]
    assert min(free[f"floor.{name}.worst_slack"] for name in floors) < 2 * bound


@pytest.mark.heavy
def test_on_the_default_scenario_thompson_sampling_beats_the_static_split_and_context_helps():
    scenario = load_scenario(SCENARIO)
    scenario = scenario.model_copy(
        update={"experiment": scenario.experiment.model_copy(update={"ope_target": None})}
    )
    n = scenario.experiment.impressions["default"]
    m = _cell_metrics(scenario, ["static_split", "beta_ts", "contextual_ts"], n)
    value = {k: v["value_per_1k"] for k, v in m.items()}
    assert value["contextual_ts"] > 1.2 * value["static_split"], value
    assert value["contextual_ts"] > 1.2 * value["beta_ts"], value


@pytest.mark.heavy
def test_the_cli_runs_the_scenario_sequentially(tmp_path, capsys):
    cfg = small_scenario(tmp_path, [1], ope_target=None)
    uri = f"sqlite:///{tmp_path / 'cli.db'}"
    out_dir = str(tmp_path / "out")
    code = main(["run", str(cfg), "--sequential", "--impressions", "2000",
                 "--tracking-uri", uri, "--out", out_dir, "--launch-id", "cli"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "8 cells (8 strategies × 1 seeds), 2,000 impressions each, launch cli" in out
    assert (tmp_path / "out" / "cli" / "summary.csv").exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["world"].update(days="many"), r"world\.days"),
        (lambda d: d["world"].update(colour="red"), r"world\.colour"),
        (lambda d: d["experiment"].update(seeds=[]), r"experiment\.seeds"),
        (lambda d: d["strategies"][0].update(kind="magic"), r"strategies\.0"),
        (lambda d: d["strategies"][0].update(shares={"taobao": -1}), r"strategies\.0.*shares"),
        (lambda d: d["strategies"].append(dict(d["strategies"][0])), r"unique"),
        (lambda d: d["strategies"][5].update(contracts="nope"), r"contracts 'nope' is not defined"),
        (lambda d: d["contracts"]["protected"]["constraints"][0].update(kind="wall"),
         r"contracts\.protected\.constraints\.0\.kind"),
        (lambda d: d["strategies"][4]["engine"]["policy"].update(noise_scale=-1),
         r"strategy contextual_ts\.engine.*noise_scale"),
    ],
)  # fmt: skip
def test_a_malformed_scenario_fails_fast_naming_the_field(tmp_path, capsys, change, match):
    data = yaml.safe_load(SCENARIO.read_text())
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["run", str(path), "--sequential", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'x.db'}", "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ")
    import re

    assert re.search(match, err, re.S), err
    assert not (tmp_path / "x.db").exists()  # failed before anything was launched or tracked


@pytest.mark.heavy
def test_every_cell_checks_off_policy_estimates_against_the_truth(tmp_path):
    scenario = load_scenario(small_scenario(tmp_path, [4], ope_bootstrap=200))
    m = _cell_metrics(scenario, ["static_split", "eps_greedy", "ab_then_commit", "oracle"],
                      30_000, seed=4)  # fmt: skip
    own = m["static_split"]  # the target logged itself: every weight is 1
    assert own["ope.ips.value"] == pytest.approx(own["ope.snips.value"], rel=1e-12)
    assert own["ope.ess"] == pytest.approx(30_000)
    assert abs(own["ope.ips.value"] - own["ope.truth"]) < own["ope.ips.high"] - own["ope.ips.low"]
    eps = m["eps_greedy"]  # ε = 0.1 keeps every candidate supported
    for est in ("ips", "dr"):
        width = eps[f"ope.{est}.high"] - eps[f"ope.{est}.low"]
        assert abs(eps[f"ope.{est}.value"] - eps["ope.truth"]) < width, est
    # a greedy committed logger gives most candidates no chance: no estimate, the reason
    commit = m["ab_then_commit"]
    assert commit["ope.unsupported_mass"] > 0.5 and "ope.ips.value" not in commit
    assert not any(k.startswith("ope.") for k in m["oracle"])  # no propensities at all


@pytest.mark.heavy
def test_emitted_logs_are_decision_logs_that_replay_end_to_end(tmp_path, capsys):
    cfg = small_scenario(tmp_path, [1], ope_target=None)
    data = yaml.safe_load(cfg.read_text())
    keep = ("eps_greedy", RECOMMENDED, "oracle")
    data["strategies"] = [s for s in data["strategies"] if s["name"] in keep]
    cfg.write_text(yaml.safe_dump(data))
    uri = f"sqlite:///{tmp_path / 'sim.db'}"
    out_dir = tmp_path / "out"
    code = main(["run", str(cfg), "--sequential", "--impressions", "4000", "--emit-logs",
                 "--tracking-uri", uri, "--out", str(out_dir), "--launch-id", "emit"])  # fmt: skip
    assert code == 0
    logs = out_dir / "emit" / "logs"
    # the oracle has no propensities: nothing to replay, nothing written
    assert sorted(p.name for p in logs.iterdir()) == [
        "arms.parquet", "eps_greedy_seed_1", "eps_greedy_seed_1.replay.yaml",
        f"{RECOMMENDED}_seed_1", f"{RECOMMENDED}_seed_1.replay.yaml",
    ]  # fmt: skip
    from allocator.logs import load_decision_log
    from allocator.replay import from_decision_log

    log = load_decision_log(logs / "eps_greedy_seed_1")
    assert len(log) == 4000 and log.has_outcome.all() and log.n_features == 15
    assert set(log.policy_kind) == {"normal_gamma"} and set(log.group) <= {
        "taobao", "douyin", "pinduoduo", "mini_shop"
    }  # fmt: skip
    assert {"category", "city_tier"} == set(log.attrs[0])
    logged = from_decision_log(log)
    assert logged.n_rounds == 4000 and logged.contexts.shape == (4000, 15)
    assert ((logged.pscores > 0) & (logged.pscores <= 1)).all()
    rows = np.repeat(np.arange(4000), np.diff(logged.cand_ptr))
    np.testing.assert_allclose(np.bincount(rows, weights=logged.cand_prob), 1.0, atol=1e-9)
    protected = load_decision_log(logs / f"{RECOMMENDED}_seed_1")
    assert len(protected) == 4000 and set(protected.policy_kind) == {"factored_value"}
    # every round keeps its events: what the recommended (factored) policy is replayed from
    events = from_decision_log(protected).outcomes
    assert events is not None and events.shape == (4000, 3) and events[:, 0].sum() > 0
    assert (events[:, 1] <= events[:, 0]).all() and ((events[:, 2] > 0) <= (events[:, 1] > 0)).all()
    # the contracts' work is in the log: mass moved (tilts, floors) and backstops, by name
    moved = set(protected.adj_names.tolist())
    assert "mini_shop_subsidy" in moved and moved <= {
        "taobao_protected", "pinduoduo_protected", "douyin_apparel_beauty", "mini_shop_subsidy",
        "new_merchants",
    }  # fmt: skip
    assert not log.forced.any() and log.adj_names.size == 0

    replay_cfg = yaml.safe_load((logs / "eps_greedy_seed_1.replay.yaml").read_text())
    assert replay_cfg["logs"] == {"decision_log": "eps_greedy_seed_1", "arms_file": "arms.parquet"}
    # the launch's learning strategies are its candidates, the recommended one with its
    # contracts, built over the catalogue's arm features
    learning = {p["name"]: p for p in replay_cfg["policies"] if p.get("mode") == "learning"}
    assert set(learning) == {"eps_greedy", RECOMMENDED}
    assert learning[RECOMMENDED]["engine"]["policy"]["kind"] == "factored_value"
    assert "taobao_protected" in str(learning[RECOMMENDED]["constraints"])
    capsys.readouterr()
    assert main(["replay", str(logs / "eps_greedy_seed_1.replay.yaml"), "--sequential",
                 "--tracking-uri", uri, "--out", str(out_dir)]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "linear_ts" in table
    row = next(line for line in table.splitlines() if line.startswith(RECOMMENDED))
    assert " replay " in row and "[" in row


def test_a_small_launch_writes_the_table_plots_and_decision_logs(tmp_path):
    """Small enough to run with the JIT off: the launch, the report and the emitted logs."""
    cfg = small_scenario(tmp_path, [1], ope_target=None)
    data = yaml.safe_load(cfg.read_text())
    data["world"]["mini_shop"]["n_merchants"] = 60
    keep = ("static_split", "contextual_ts", "contextual_ts_protected", "oracle")
    data["strategies"] = [s for s in data["strategies"] if s["name"] in keep]
    cfg.write_text(yaml.safe_dump(data))
    stream = io.StringIO()
    out = run_scenario(
        cfg, SequentialRunner(), tracking_uri=f"sqlite:///{tmp_path / 'small.db'}",
        out_dir=tmp_path / "out", launch_id="small", impressions=1200, stream=stream,
        emit_logs=True,
    )  # fmt: skip
    assert out.exit_code == 0 and not out.failed
    assert out.rows[0]["strategy"] == "oracle" and out.rows[0]["regret_per_1k"] == 0.0
    assert all(name in out.table for name in keep)
    files = {p.name for p in (tmp_path / "out" / "small").iterdir()}
    assert {"summary.csv", "cumulative_regret.png", "group_shares.png"} <= files
    protected = next(r for r in out.rows if r["strategy"] == "contextual_ts_protected")
    assert np.isfinite(protected["protection_cost_per_1k"])
    from allocator.logs import load_decision_log

    log = load_decision_log(tmp_path / "out" / "small" / "logs" / "contextual_ts_protected_seed_1")
    assert len(log) == 1200 and log.adj_names.size > 0


@pytest.mark.slow
def test_the_cli_launches_on_a_fresh_local_ray_without_the_token_warning(tmp_path):
    """The README's main job, as a user runs it: a fresh process, a local Ray cluster (not
    --sequential). Ray reads its authentication mode when imported, so the launch must set
    it before that (a mismatch makes the cluster refuse its own driver)."""
    cfg = small_scenario(tmp_path, [1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [sys.executable, "-m", "allocator.cli", "run", str(cfg), "--impressions", "1500",
         "--workers", "2", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "InvalidAuthToken" not in proc.stderr
    assert "Token authentication is enabled" not in proc.stderr
    assert "viewStateShareKey=" in proc.stdout
