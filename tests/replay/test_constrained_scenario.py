"""The recommended policy (value TS under the partner contracts) replayed on the
scenario simulator's decision log of another learning policy, against its on-policy value
in the same simulated world; likewise a what-if contract change (the Taobao floor kept one
month longer), against the simulator's value of the changed contract.

The log goes through the allocator's own files (``--emit-logs`` format, loaded with
``from_decision_log``: timestamps and the category / city-tier attributes the contract
scopes read). The policy learns the simulator's objective (app value × ``reward_scale``),
so the log's rewards are scaled the same way. Its online truth is the mean of the
simulator's exact expected value over three traffic seeds, with as many impressions over
the same 120 days as the replay accepted: the accepted events are a thinned copy of the
logged traffic, so the policy's online rounds are that many impressions over the period.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from allocator.logs import load_decision_log
from allocator.replay import LoggedData, from_decision_log, replay_nonstationary
from allocator.scenario.build import build_strategy, grid_cells, scenario_arms
from allocator.scenario.config import ScenarioConfig, load_scenario
from allocator.scenario.simulate import Shared, run_cell
from allocator.scenario.world import World
from tests.launch.test_scenario_launch import small_scenario

TARGET = "value_ts_protected"
LOG_ROWS = 50_000


def _scenario(tmp: Path, taobao_end: str | None = None) -> ScenarioConfig:
    """The small bundled scenario plus an ε = 0.5 learning logger; optionally the Taobao
    floor ending at ``taobao_end`` (the what-if: a replay config change, not code)."""
    data = yaml.safe_load(small_scenario(tmp, [1], ope_target=None).read_text())
    data["strategies"].append({"name": "explorer", "kind": "policy", "engine": {
        "policy": {"kind": "normal_gamma", "epsilon": 0.5, "half_life": 200000}}})  # fmt: skip
    if taobao_end is not None:
        floor = next(c for c in data["contracts"]["protected"]["constraints"]
                     if c["name"] == "taobao_protected")  # fmt: skip
        floor["schedule"]["end"] = taobao_end
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_scenario(path)


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[World, ScenarioConfig, LoggedData, Path]:
    tmp = tmp_path_factory.mktemp("constrained")
    scenario = _scenario(tmp)
    world = World(scenario.world, seed=scenario.experiment.world_seed)
    cell = next(c for c in grid_cells(scenario, world, LOG_ROWS)
                if c.strategy == "explorer" and c.seed == 1)  # fmt: skip
    res = run_cell(Shared(world, scenario), dataclasses.replace(cell, log_dir=str(tmp / "logs")))
    arms = scenario_arms(world)
    data = from_decision_log(load_decision_log(res.extra["log"]), arm_ids=arms.ids)
    scale = scenario.experiment.reward_scale
    return world, scenario, dataclasses.replace(data, rewards=data.rewards * scale), tmp


def _replay_vs_truth(world: World, scenario: ScenarioConfig, data: LoggedData, label: str):
    arms = scenario_arms(world)
    cell = next(c for c in grid_cells(scenario, world, 1000)
                if c.strategy == TARGET and c.seed == 1)  # fmt: skip
    engine = build_strategy(cell.spec, scenario, world, arms, 5).engine
    res = replay_nonstationary(engine, data, np.random.default_rng(0))
    scale = scenario.experiment.reward_scale
    truths = [
        run_cell(Shared(world, scenario),
                 dataclasses.replace(cell, n_impressions=res.n_accepted, seed=s)
                 ).metrics["value_per_1k"] / 1000 * scale
        for s in (11, 12, 13)
    ]  # fmt: skip
    truth = float(np.mean(truths))
    print(
        f"{label}: replay {res.value:.5f} [{res.low:.5f}, {res.high:.5f}], truth {truth:.5f} "
        f"(seeds {np.round(truths, 5).tolist()}); accepted {res.n_accepted} of "
        f"{res.n_events} (rate {res.acceptance_rate:.3f}, truncated "
        f"{res.truncated_share:.3f}, ess {res.ess:.0f})"
    )
    return res, truth


@pytest.mark.slow
def test_the_recommended_constrained_policy_replayed_covers_its_online_value(logged):
    world, scenario, data, _ = logged
    assert data.attrs is not None and set(data.attrs) == {"category", "city_tier"}
    res, truth = _replay_vs_truth(world, scenario, data, TARGET)
    assert res.low <= truth <= res.high
    # the interval is wide (GMV-like rewards up to ~450× their mean), the value is not
    assert abs(res.value - truth) < 0.25 * truth


@pytest.mark.slow
def test_a_what_if_contract_change_replayed_covers_the_changed_contracts_value(logged):
    world, _, data, tmp = logged
    changed = _scenario(tmp, taobao_end="2026-01-31T00:00:00Z")  # one month longer
    res, truth = _replay_vs_truth(world, changed, data, "taobao floor to 2026-01-31")
    assert res.low <= truth <= res.high
    assert abs(res.value - truth) < 0.25 * truth
