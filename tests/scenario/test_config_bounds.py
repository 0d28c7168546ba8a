"""What ``allocator check`` accepts, ``allocator run`` can run: an engine's sizes meet the
world's, strategy and experiment values are finite, bounded and not repeated, and every
sweep point is checked like a direct value. Each refusal is a ConfigError before launch."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from allocator.config import EngineConfig, ObjectiveConfig, parse_config
from allocator.errors import ConfigError
from allocator.registry import MINI_SHOP
from allocator.scenario.build import build_strategy, grid_cells, replay_split, scenario_arms
from allocator.scenario.config import (
    MAX_IMPRESSIONS,
    ScenarioConfig,
    check_impressions,
    max_shown,
    world_objective,
)
from allocator.scenario.strategies import Tick
from allocator.scenario.world import World
from allocator.scenario.world.world import context_names

WORLD = {"days": 3, "mini_shop": {"n_merchants": 40, "k": 6}}


def scenario(*strategies: dict[str, Any], **experiment: Any) -> dict[str, Any]:
    return {
        "world": copy.deepcopy(WORLD),
        "experiment": {"seeds": [1], "ope_target": None, **experiment},
        "strategies": list(strategies),
    }


def policy(name: str = "p", **settings: Any) -> dict[str, Any]:
    return {"kind": "policy", "name": name, "engine": {"policy": settings}}


def cells(data: dict[str, Any], n: int = 1000) -> list[Any]:
    """The grid ``check`` and ``run`` both build (the driver-side checks)."""
    cfg = parse_config(ScenarioConfig, data)
    return grid_cells(cfg, World(cfg.world, seed=cfg.experiment.world_seed), n)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"kind": "linear_gaussian", "n_features": 3},
         r"strategy p.engine.policy.n_features = 3, but the world has 15 context columns"),
        ({"kind": "linear_gaussian", "n_features": 16}, r"n_features = 16, but the world has 15"),
        ({"kind": "shared_linear", "n_context_features": 4},
         r"policy.n_context_features = 4, but the world has 15 context columns"),
        ({"kind": "shared_linear", "n_arm_features": 2},
         r"policy.n_arm_features = 2, but the world has 12 arm features"),
    ],
)  # fmt: skip
def test_an_explicit_size_the_world_does_not_have_is_refused_before_launch(settings, match):
    with pytest.raises(ConfigError, match=match):
        cells(scenario(policy(**settings)))


def test_the_worlds_own_sizes_spelled_out_are_accepted():
    width = len(context_names(parse_config(ScenarioConfig, scenario(policy())).world))
    cells(scenario(policy(kind="linear_gaussian", n_features=width)))
    cells(scenario(policy(kind="shared_linear", n_context_features=width, n_arm_features=12)))


def test_max_candidates_must_take_the_most_candidates_an_impression_can_have():
    cfg = parse_config(ScenarioConfig, scenario(policy()))
    most = max_shown(cfg.world)
    assert most == 3 + 6  # the three partners and mini_shop.k merchants
    # the bound is what the world really draws: reached, never passed
    world = World(cfg.world, seed=7)
    shown = max(int(max(c.cand_ptr[1:] - c.cand_ptr[:-1])) for c in world.stream(5000, seed=1))
    assert shown == most
    with pytest.raises(
        ConfigError, match=rf"max_candidates = {most - 1}, but one impression .* {most} candid"
    ):
        cells(scenario(policy(kind="shared_linear", max_candidates=most - 1)))
    assert len(cells(scenario(policy(kind="shared_linear", max_candidates=most)))) == 1


def split_of(shares: dict[str, float]) -> np.ndarray:
    """A static split's distribution over two impressions: taobao, douyin and two
    merchants; then pinduoduo and a merchant."""
    spec = {"kind": "static_split", "name": "split", "shares": shares}
    cfg = parse_config(ScenarioConfig, scenario(spec))
    world = World(cfg.world, seed=7)
    arms = scenario_arms(world)
    strategy = build_strategy(spec, cfg, world, arms, 0)
    code = {g: i for i, g in enumerate(arms.group_names)}
    groups = np.array([code[g] for g in ("taobao", "douyin", MINI_SHOP, MINI_SHOP,
                                         "pinduoduo", MINI_SHOP)])  # fmt: skip
    ptr = np.array([0, 4, 6])
    tick = Tick(np.zeros(2), np.zeros((2, 15)), np.zeros(2, dtype=np.int64),
                np.zeros(2, dtype=np.int64), ptr, np.arange(6), groups, np.zeros(6))  # fmt: skip
    return strategy.distribution(tick)


@pytest.mark.parametrize("huge", [1e308, 1.7976931348623157e308])
def test_static_split_shares_near_the_float_limit_split_as_their_ratios(huge):
    """The shares' total overflowed: every weight became 0 and the split served the
    last candidate of each impression instead of the contract split."""
    sane = split_of({"taobao": 1.0, "douyin": 1.0})
    np.testing.assert_allclose(sane, [0.5, 0.5, 0, 0, 0.5, 0.5])
    np.testing.assert_allclose(split_of({"taobao": huge, "douyin": huge}), sane)
    np.testing.assert_allclose(
        split_of({"taobao": huge, "douyin": huge / 3, MINI_SHOP: huge / 3}),
        split_of({"taobao": 3.0, "douyin": 1.0, MINI_SHOP: 1.0}),
    )


@pytest.mark.parametrize("share", [math.inf, math.nan, 0.0, -1.0])
def test_static_split_shares_must_be_finite_and_positive(share):
    spec = {"kind": "static_split", "name": "split", "shares": {"taobao": share, "douyin": 1.0}}
    with pytest.raises(ConfigError, match=r"strategies.0.static_split.shares.taobao"):
        parse_config(ScenarioConfig, scenario(spec))


@pytest.mark.parametrize("n", [MAX_IMPRESSIONS + 1, 99999999999999999999])
def test_impressions_past_the_bound_are_refused_in_the_config_and_the_override(n):
    """Past int64 a cell failed with an OverflowError, past memory with a MemoryError."""
    with pytest.raises(ConfigError, match=r"experiment.impressions.small: Input should be less"):
        parse_config(ScenarioConfig, scenario({"kind": "oracle", "name": "o"},
                                              impressions={"small": n}))  # fmt: skip
    with pytest.raises(ConfigError, match=rf"--impressions {n}: expected an integer from 1000"):
        check_impressions(n)
    assert check_impressions(MAX_IMPRESSIONS) == MAX_IMPRESSIONS
    parse_config(ScenarioConfig, scenario({"kind": "oracle", "name": "o"},
                                          impressions={"small": MAX_IMPRESSIONS}))  # fmt: skip


def contracts_scenario(cap: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    sched = {"start": "2025-10-01T00:00:00Z", "end": "2025-10-04T00:00:00Z"}
    data = scenario(policy(kind="normal_gamma"))
    data["strategies"][0]["contracts"] = "p"
    data["contracts"] = {"p": {"constraints": [
        {"name": "cap", "kind": "cap", "target": cap, "schedule": {**sched, "start_value": 0.1}},
        {"name": "floor", "kind": "floor", "target": floor,
         "schedule": {**sched, "start_value": 0.5}},
    ]}}  # fmt: skip
    return data


@pytest.mark.parametrize("floor", [{"group": "taobao"}, {"cold_in_group": "taobao"}])
def test_an_arm_cap_below_a_floor_on_the_partner_group_of_that_arm_is_refused(floor):
    """A partner group is exactly its one arm: the floor held it at 0.5 and the cap at 0.1,
    and the floor missed its bound by 0.2 (repro: arm cap 0.1, group floor 0.5)."""
    with pytest.raises(ConfigError, match=r"cap 'cap' \(0.100\) is below floor 'floor' \(0.500"):
        parse_config(ScenarioConfig, contracts_scenario({"arm": "taobao"}, floor))
    # a merchant's cap against the Mini Shop's floor: the other merchants can meet it
    parse_config(ScenarioConfig, contracts_scenario({"arm": "merchant:00001"}, {
        "group": MINI_SHOP}))  # fmt: skip


def test_repeated_seeds_and_sweep_values_are_refused():
    """Each repeat was the same cell again, under the same name, counted by the table as
    another independent seed."""
    ng = policy("ng", kind="normal_gamma")
    with pytest.raises(ConfigError, match=r"experiment.seeds: repeated \[1\]"):
        parse_config(ScenarioConfig, scenario(ng, seeds=[1, 2, 1]))
    swept = {**ng, "sweep": {"policy.epsilon": [0.1, 0.2, 0.1]}}
    with pytest.raises(ConfigError, match=r"ng: sweep.policy.epsilon repeats 0.1"):
        parse_config(ScenarioConfig, scenario(swept))
    rates = {**ng, "sweep": {"objective.take_rates": [{"taobao": 0.1, "douyin": 0.2},
                                                      {"douyin": 0.2, "taobao": 0.1}]}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"sweep.objective.take_rates repeats"):
        parse_config(ScenarioConfig, scenario(rates))
    distinct = {**ng, "sweep": {"policy.epsilon": [0.1, 0.2]}}
    got = cells(scenario(distinct, seeds=[1, 2]))
    assert sorted(c.name for c in got) == [
        "ng[epsilon=0.1]/seed=1", "ng[epsilon=0.1]/seed=2",
        "ng[epsilon=0.2]/seed=1", "ng[epsilon=0.2]/seed=2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value"),
    [("objective.take_rates", {"alibaba": 0.1}), ("policy.group_priors", {"alibaba": {}})],
)
def test_every_sweep_point_names_only_the_worlds_groups(path, value):
    """The direct form was refused, the same mapping from a sweep point was accepted (and
    its unknown group silently fell back to the default)."""
    part, key = path.split(".")
    direct = policy("ng", kind="normal_gamma")
    direct["engine"].setdefault(part, {})[key] = value
    with pytest.raises(ConfigError, match=rf"strategies\[0\].engine.{path}: unknown groups"):
        parse_config(ScenarioConfig, scenario(direct))
    swept = {**policy("ng", kind="normal_gamma"), "sweep": {path: [value]}}
    with pytest.raises(ConfigError, match=rf"strategies\[0\] \(sweep .*\).engine.{path}: unknown"):
        parse_config(ScenarioConfig, scenario(swept))


def test_an_emitted_replay_config_proposes_only_engines_of_the_logs_reward():
    """The log's reward column is the app value: a Beta–Bernoulli strategy on orders was
    proposed as a learning candidate and its replay failed on the first reward past 1."""
    data = scenario(
        policy("beta_orders", kind="beta_bernoulli"),
        policy("ng", kind="normal_gamma"),
        {"kind": "oracle", "name": "o"},
    )
    data["strategies"][0]["engine"]["objective"] = {"order": 1.0}
    cfg = parse_config(ScenarioConfig, data)
    world = World(cfg.world, seed=7)
    entries, left_out = replay_split(cfg, world)
    assert [e["name"] for e in entries] == ["ng"]
    assert left_out == ("beta_orders: its objective is not the app value, the log's reward column",)
    app_value = ObjectiveConfig.model_validate(world_objective(cfg.world, 0.1))
    engine = parse_config(EngineConfig, entries[0]["engine"])
    assert engine.objective == app_value
