"""A scenario's ``crosses`` by the world's feature and column names: they resolve to the
indices the policy takes in any world (other partners, other categories), and a name the
world does not have fails when the config is read, naming the world's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from allocator.config import parse_config
from allocator.errors import ConfigError
from allocator.scenario.build import build_strategy, grid_cells, scenario_arms
from allocator.scenario.config import ScenarioConfig, resolve_crosses
from allocator.scenario.world import World
from allocator.scenario.world.world import arm_feature_names, context_names

ROOT = Path(__file__).resolve().parents[2]
NAMED = {"sells_*": [], "rating": ["bias"], "price_level": ["bias"]}
POLICY = {"kind": "factored_value", "click_model": "hybrid", "factor_prior": "balanced"}


def scenario(crosses: Any, partners: int = 3, drop_category: str | None = None) -> dict:
    """The bundled config with one factored strategy (and the oracle), ``partners`` of the
    three partners, and without ``drop_category`` if given."""
    data = yaml.safe_load((ROOT / "configs" / "wechat_entry.yaml").read_text())
    world = data["world"]
    world["partners"] = world["partners"][:partners]
    world["mini_shop"]["n_merchants"] = 60
    if drop_category:
        world["categories"].remove(drop_category)
        for rates in [p["rates"] for p in world["partners"]] + [world["mini_shop"]["rates"]]:
            del rates[drop_category]
        intent = world["users"]["intent"]
        del intent[drop_category]
        total = sum(intent.values())
        world["users"]["intent"] = {c: v / total for c, v in intent.items()}
        for peak in world["traffic"]["peaks"]:
            peak["intent_tilt"].pop(drop_category, None)
    data["contracts"] = {}
    data["experiment"].update({"seeds": [1], "ope_target": None})
    policy = {**POLICY, "crosses": copy.deepcopy(crosses)}
    data["strategies"] = [
        {"kind": "policy", "name": "value_ts", "engine": {"policy": policy}},
        {"kind": "oracle", "name": "oracle"},
    ]
    return data


def built_crosses(data: dict) -> dict[int, list[int]]:
    """The crosses of the policy built from ``data``'s first strategy, and its world."""
    cfg = parse_config(ScenarioConfig, data)
    world = World(cfg.world, seed=3)
    strategy = build(cfg, world)
    return strategy.policy.config.crosses, world


def build(cfg: ScenarioConfig, world: World) -> Any:
    """The first strategy of ``cfg`` built on ``world``."""
    spec = cfg.strategies[0].model_dump(mode="json")
    return build_strategy(spec, cfg, world, scenario_arms(world), 1)


def expected(world: World) -> dict[int, list[int]]:
    """The named crosses, resolved by hand from the built world's column names."""
    names, columns = world.arm_feature_names, world.context_names
    out = {names.index(n): [] for n in names if n.startswith("sells_")}
    bias = [columns.index("bias")]
    return {**out, names.index("rating"): bias, names.index("price_level"): bias}


@pytest.mark.parametrize(
    ("partners", "drop"), [(3, None), (2, None), (3, "food_delivery"), (1, "apparel")]
)
def test_names_resolve_to_the_worlds_indices(partners, drop):
    crosses, world = built_crosses(scenario(NAMED, partners, drop))
    assert crosses == expected(world)
    n_groups = partners + 1
    assert min(crosses) == n_groups  # the first sells_ column follows the group one-hots


def test_names_and_indices_build_the_same_policy():
    """In the bundled world the names are the indices the experiments recorded."""
    by_index = {4: [], 5: [], 6: [], 7: [], 8: [], 9: [], 10: [0], 11: [0]}
    named, _ = built_crosses(scenario(NAMED))
    indexed, _ = built_crosses(scenario(by_index))
    assert named == indexed == by_index
    mixed, _ = built_crosses(scenario({"sells_*": [], 10: ["bias"], "price_level": [0]}))
    assert mixed == by_index


def test_a_list_of_patterns_is_the_union_of_their_columns():
    columns = ("bias", "tier_1", "tier_2", "intent_a", "intent_b")
    got = resolve_crosses(
        {"rating": ["intent_*", "bias", "intent_a"]}, ("rating",), columns, "where"
    )
    assert got == {0: [3, 4, 0]}


@pytest.mark.parametrize(
    ("crosses", "message"),
    [
        ({"stars": ["bias"]}, r"'stars' matches no arm feature of the world: \['group_taobao'"),
        ({"rating": ["weekday"]}, r"'weekday' matches no context column of the world: \['bias'"),
        ({"sells_*": [], "sells_beauty": []}, "arm feature 5 is named by two keys"),
        ({"rating": "bias"}, r"crosses.rating: expected a list of context columns"),
        ({"rating": [1.5]}, "1.5 is neither a context column name nor an index"),
    ],
)
def test_unknown_or_ambiguous_names_fail_when_the_config_is_read(crosses, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(ScenarioConfig, scenario(crosses))


@pytest.mark.parametrize(
    ("crosses", "message"),
    [
        # the int -1 would reach the policy as the JSON key "-1", a pattern matching nothing
        ({-1: ["bias"]}, r"crosses: -1 is not an index \(indices count from 0\)"),
        ({"rating": [-1]}, r"crosses.rating: -1 is not an index"),
        ({"010": ["bias"]}, r"'010' matches no arm feature"),  # not how JSON spells 10
        ({"1" * 5000: ["bias"]}, r"'1111.*' matches no arm feature"),
    ],
)
def test_negative_or_unusually_spelled_indices_fail_when_the_config_is_read(crosses, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(ScenarioConfig, scenario(crosses))


@pytest.mark.parametrize(
    ("crosses", "sweep", "message"),
    [
        ({}, {"policy.crosses": [{"rating": ["bias"]}, {"stars": []}]},
         r"strategies\[0\] \(sweep .*'stars' matches no arm feature"),
        ({"sells_*": []}, {"policy.crosses.sells_beauty": [["bias"]]},
         "arm feature 5 is named by two keys"),
    ],
)  # fmt: skip
def test_swept_crosses_fail_when_the_config_is_read(crosses, sweep, message):
    data = scenario(crosses)
    data["strategies"][0]["sweep"] = sweep
    with pytest.raises(ConfigError, match=message):
        parse_config(ScenarioConfig, data)


def test_a_sweeps_base_engine_is_checked_before_the_launch():
    """An emitted log's replay config has a swept strategy's base engine, which no cell
    runs: an invalid one fails on the driver, not in every cell after its simulation."""
    data = scenario({12: ["bias"]})  # 12: the intercept, which only the sweep adds
    data["strategies"][0]["sweep"] = {"policy.arm_intercept": [True]}
    cfg = parse_config(ScenarioConfig, data)
    world = World(cfg.world, seed=3)
    with pytest.raises(ConfigError, match="crosses names arm feature 12"):
        grid_cells(cfg, world, 1000)
    data["strategies"][0]["engine"]["policy"]["arm_intercept"] = True
    cells = grid_cells(parse_config(ScenarioConfig, data), world, 1000)
    assert [c.strategy for c in cells] == ["value_ts[arm_intercept=True]", "oracle"]


def test_indices_past_the_world_are_still_the_policys_error():
    data = scenario({12: [0]})
    cfg = parse_config(ScenarioConfig, data)  # indices are the policy's to check
    world = World(cfg.world, seed=3)
    with pytest.raises(ConfigError, match="crosses names arm feature 12"):
        build(cfg, world)


def test_the_names_are_the_built_worlds_columns():
    """The names a config is checked against (from the world config alone) label the built
    world's columns: as many, ``bias`` constant, ``sells_*`` and ``rating`` set on the
    merchants only, the group one-hots on their group."""
    cfg = parse_config(ScenarioConfig, scenario(NAMED, 2, "home"))
    world = World(cfg.world, seed=3)
    arms, chunk = scenario_arms(world), next(world.stream(500, seed=1))
    names, columns = arm_feature_names(cfg.world), context_names(cfg.world)
    assert len(names) == arms.features.shape[1]
    assert len(columns) == arms.n_context == chunk.contexts.shape[1]
    assert np.all(chunk.contexts[:, columns.index("bias")] == 1.0)
    sells = [i for i, n in enumerate(names) if n.startswith("sells_")]
    partners, merchants = arms.features[:2], arms.features[2:]
    assert not partners[:, sells].any() and (merchants[:, sells].sum(axis=1) >= 1).all()
    assert not partners[:, names.index("rating")].any()
    assert merchants[:, names.index("rating")].any()
    for g, group in enumerate(("taobao", "douyin")):
        assert arms.features[g, names.index(f"group_{group}")] == 1.0
    assert np.all(merchants[:, names.index("group_mini_shop")] == 1.0)


def test_the_bundled_recommended_policy_keeps_the_tested_crosses():
    """``configs/wechat_entry.yaml``'s recommended policy builds, in its own world, the
    engine ``experiments/adopt_crosses`` tested (``crosses_b01``: crosses by index)."""
    cfg = parse_config(
        ScenarioConfig, yaml.safe_load((ROOT / "configs" / "wechat_entry.yaml").read_text())
    )
    world = World(cfg.world, seed=cfg.experiment.world_seed)
    spec = next(s for s in cfg.strategies if s.name == "value_ts_protected")
    built = build_strategy(spec.model_dump(mode="json"), cfg, world, scenario_arms(world), 1)
    tested = yaml.safe_load((ROOT / "experiments" / "adopt_crosses" / "config.yaml").read_text())
    spec_b01 = next(s for s in tested["strategies"] if s["name"] == "crosses_b01")
    dumped = built.policy.config.model_dump()
    assert {key: dumped[key] for key in spec_b01["engine"]["policy"]} == spec_b01["engine"][
        "policy"
    ]
    assert dumped["crosses"] == {4: [], 5: [], 6: [], 7: [], 8: [], 9: [], 10: [0], 11: [0]}
    assert spec.contracts == spec_b01["contracts"] == "protected"
