"""Scenario contracts that could never apply, or never hold, are refused at config time; the
compliance table measures a floor only where the layer applies it, for any number of groups."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from allocator.config import parse_config
from allocator.constraints import ConstraintSet
from allocator.errors import ConfigError
from allocator.scenario import kernels as k
from allocator.scenario.compliance import floor_tracks
from allocator.scenario.config import Z_MAX, ScenarioConfig, max_order_values

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "configs" / "wechat_entry.yaml").read_text())
SCHEDULE = {"start": "2025-10-01T00:00:00Z", "end": "2025-12-31T00:00:00Z", "start_value": 0.3}


def with_contracts(*constraints: dict[str, Any], **world: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["contracts"]["protected"]["constraints"] = list(constraints)
    data["world"].update(world)
    return data


def floor(name: str, target: dict[str, Any], scope=None, **schedule: Any) -> dict[str, Any]:
    return {"name": name, "kind": "floor", "target": target, "scope": scope or {},
            "schedule": {**SCHEDULE, **schedule}}  # fmt: skip


@pytest.mark.parametrize(
    ("scope", "schedule", "match"),
    [
        ({"category": ["toys"]}, {}, r"scope.category has values \['toys'\] .* \['apparel'"),
        ({"city_tier": ["tier1"]}, {}, r"values \['tier1'\] .* \['tier_1', 'tier_2', 'tier_3'\]"),
        ({"slot": ["top"]}, {}, r"attribute 'slot' is never sent .* \['category', 'city_tier'\]"),
        ({}, {"start": "2030-01-01T00:00:00Z", "end": "2031-01-01T00:00:00Z"},
         r"contracts.protected.f: schedule 2030-01-01.* outside the world's period"),
        ({}, {"start": "2025-01-01T00:00:00Z", "end": "2025-10-01T00:00:00Z"},
         "outside the world's period"),
    ],
)  # fmt: skip
def test_contracts_the_scenario_never_applies_are_refused(scope, schedule, match):
    data = with_contracts(floor("f", {"group": "taobao"}, scope, **schedule))
    with pytest.raises(ConfigError, match=match):
        parse_config(ScenarioConfig, data)


def test_scopes_and_schedules_the_scenario_applies_are_accepted():
    """Known values, and a schedule that only overlaps the period, pass."""
    scope = {"category": ["apparel"], "city_tier": ["tier_1", "tier_3"]}
    late = {"start": "2026-01-20T00:00:00Z", "end": "2027-01-01T00:00:00Z"}  # world: 120 days
    parse_config(ScenarioConfig, with_contracts(floor("f", {"group": "taobao"}, scope, **late)))


@pytest.mark.parametrize(
    "target", [{"cold_in_group": "mini_shop"}, {"arm": "merchant:00001"}, {"arm": "taobao"}]
)
def test_a_group_cap_below_a_floor_inside_the_group_is_refused(target):
    group = "taobao" if target.get("arm") == "taobao" else "mini_shop"
    cap = {"name": "cap", "kind": "cap", "target": {"group": group},
           "schedule": {**SCHEDULE, "start_value": 0.05}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"cap 'cap' \(0.050\) is below floor 'f' \(0.300\)"):
        parse_config(ScenarioConfig, with_contracts(cap, floor("f", target)))
    # below the floor only on requests the floor does not cover: feasible
    scoped = {**cap, "scope": {"category": ["home"]}}
    parse_config(
        ScenarioConfig, with_contracts(scoped, floor("f", target, {"category": ["food_delivery"]}))
    )


def test_order_values_past_a_policy_reward_bound_are_refused_at_config_time():
    data = copy.deepcopy(BASE)
    data["world"]["partners"] = copy.deepcopy(ScenarioConfig.model_validate(BASE).world.model_dump(
        mode="json")["partners"])  # fmt: skip
    data["world"]["partners"][0]["rates"]["apparel"]["order_value"] = 1.0e12
    with pytest.raises(ConfigError, match=r"strategies\[2\] \(eps_greedy\): .* reward up to "
                       r"[0-9.e+]+ per impression, past .*max_abs_reward = 1e\+09"):  # fmt: skip
        parse_config(ScenarioConfig, data)
    # a learner whose bound admits them is accepted
    for s in data["strategies"]:
        if s["kind"] == "policy":
            s["engine"].setdefault("policy", {})["max_abs_reward"] = 1e15
    parse_config(ScenarioConfig, data)


def test_the_order_value_bound_covers_every_draw_the_world_can_make():
    """The GMV draw is order value · exp(σz − σ²/2), z from Box-Muller on 53-bit uniforms:
    its largest z is Z_MAX, reached at the smallest 1 − u; the bound uses it."""
    u = 1.0 - 2.0**-53  # the largest uniform below 1
    assert np.sqrt(-2.0 * np.log(1.0 - u)) == pytest.approx(Z_MAX, rel=1e-12)
    world = ScenarioConfig.model_validate(BASE).world
    largest = max_order_values(world)
    tail = np.exp(world.gmv_sigma * Z_MAX - 0.5 * world.gmv_sigma**2)
    for p in world.partners:
        top = max(r.order_value for r in p.rates.values()) * max(p.effects.tier_value)
        assert largest[p.id] == pytest.approx(top * tail)
    assert largest["mini_shop"] > max(r.order_value for r in world.mini_shop.rates.values())


def arms(n_groups: int) -> SimpleNamespace:
    names = tuple(f"p{i}" for i in range(n_groups))
    return SimpleNamespace(
        group_names=names, categories=("apparel", "home"), city_tiers=("tier_1", "tier_2")
    )


def tracks_of(*constraints: dict[str, Any], n_groups: int = 3) -> list[Any]:
    cset = ConstraintSet.model_validate({"window": 10, "constraints": list(constraints)})
    scenario = SimpleNamespace(contracts={"c": cset})
    return floor_tracks(scenario, {"contracts": "c"}, arms(n_groups), None)


T = np.datetime64("2025-10-02T00:00:00").astype("datetime64[s]").astype(np.float64)


def test_a_floor_scoped_on_an_attribute_the_simulator_never_sends_measures_nothing():
    """The layer never applies it (no request carries ``slot``): neither does the table."""
    (track,) = tracks_of(floor("f", {"group": "p1"}, {"slot": ["top"]}))
    n = 50
    present = np.zeros((n, 1), dtype=np.uint64)
    k.present_groups(np.arange(0, 3 * n + 1, 3), np.tile(np.arange(3), n), present)
    out = track.measure(np.full(n, T), np.zeros(n, dtype=np.int64), present,
                        np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))  # fmt: skip
    assert out == {"floor.f.impressions": 0.0}


@pytest.mark.parametrize("n_groups", [3, 64, 66, 130])
def test_present_groups_is_exact_for_any_number_of_groups(n_groups):
    rng = np.random.default_rng(n_groups)
    sizes = rng.integers(1, 6, size=400)
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    cand = rng.integers(0, n_groups, size=int(ptr[-1]))
    present = np.zeros((400, k.group_words(n_groups)), dtype=np.uint64)
    k.present_groups(ptr, cand, present)
    for g in {0, 1, n_groups - 2, n_groups - 1, 63 % n_groups}:
        want = np.array([g in cand[ptr[r] : ptr[r + 1]] for r in range(400)])
        np.testing.assert_array_equal(k.has_group(present, g), want, err_msg=str(g))


def test_a_floor_on_group_65_is_measured_where_group_65_was_a_candidate():
    """Codes past 63 used to wrap onto low bits: the floor was measured on almost every
    impression, including those without its group."""
    n, g = 200, 65
    with_g = np.arange(n) % 5 == 0
    cand = np.where(with_g[:, None], [[0, g]], [[0, 1]]).ravel()
    present = np.zeros((n, k.group_words(66)), dtype=np.uint64)
    k.present_groups(np.arange(0, 2 * n + 1, 2), cand, present)
    (track,) = tracks_of(floor("f", {"group": f"p{g}"}), n_groups=66)
    served = np.where(with_g, g, 0)
    zeros = np.zeros(n, dtype=np.int64)
    out = track.measure(np.full(n, T), served, present, zeros, zeros)
    assert out["floor.f.impressions"] == with_g.sum()
    assert out["floor.f.served_share"] == 1.0
