"""World configuration: the bundled scenario loads, and malformed input fails fast with a
ConfigError naming the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from allocator.errors import ConfigError
from allocator.scenario.world import WorldConfig, load_world_config

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "configs" / "wechat_entry.yaml"

Patch = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Patch:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _drop(path: str) -> Patch:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return apply


CASES: list[tuple[str, Patch, str]] = [
    ("wrong type", _set("days", "many"), r"days"),
    ("unknown field", _set("weather", "rain"), r"weather.*[Ee]xtra"),
    ("unknown nested field", _set("mini_shop.n_merchant", 5), r"mini_shop\.n_merchant\b"),
    ("tiers not summing to 1", _set("users.city_tier", [0.5, 0.4, 0.3]), r"users.*city_tier"),
    ("intent not summing to 1", _set("users.intent.apparel", 0.5), r"users.*intent"),
    ("negative take rate", _set("partners.0.take_rate", -0.1), r"partners\.0\.take_rate"),
    (
        "rate above 1",
        _set("partners.1.rates.beauty.click", 1.5),
        r"partners\.1\.rates\.beauty\.click",
    ),
    ("zero order value", _set("mini_shop.rates.home.order_value", 0), r"mini_shop\.rates\.home"),
    ("missing category rates", _drop("mini_shop.rates.grocery"), r"mini_shop\.rates.*grocery"),
    (
        "unknown category rates",
        _set("partners.2.rates.toys", {"click": 0.1, "order": 0.2, "order_value": 50}),
        r"partners\.2\.rates.*toys",
    ),
    ("no merchants", _set("mini_shop.n_merchants", 0), r"mini_shop\.n_merchants"),
    ("negative strategic weight", _set("mini_shop.strategic_weight", -1), r"strategic_weight"),
    ("unknown retrieval", _set("mini_shop.retrieval", "random"), r"mini_shop\.retrieval"),
    ("positive newcomer lift", _set("mini_shop.newcomer_lift", 0.5), r"newcomer_lift"),
    ("short tier lift", _set("mini_shop.effects.tier_lift", [0.1, 0.2]), r"effects\.tier_lift"),
    ("zero drift period", _set("partners.0.drift.period_days", 0), r"drift\.period_days"),
    ("eligibility above 1", _set("partners.0.eligibility", 1.2), r"partners\.0\.eligibility"),
    ("diurnal of 23 hours", _set("traffic.diurnal", [1.0] * 23), r"traffic.*diurnal"),
    ("silent diurnal", _set("traffic.diurnal", [0.0] * 24), r"diurnal is all zero"),
    ("negative boost", _set("traffic.peaks.0.boost_first", -0.1), r"peaks\.0\.boost_first"),
    ("peak ending early", _set("traffic.peaks.1.end", "2025-11-01"), r"traffic\.peaks\.1"),
    (
        "tilt of unknown category",
        _set("traffic.peaks.0.intent_tilt.toys", 2.0),
        r"traffic\.peaks\.0\.intent_tilt.*toys",
    ),
    ("reserved partner id", _set("partners.0.id", "mini_shop"), r"partners\.0\.id"),
    ("duplicate partner id", _set("partners.1.id", "taobao"), r"partners\.1\.id"),
    ("no partners", _set("partners", []), r"partners is empty"),
    ("duplicate category", _set("categories", ["apparel", "apparel"]), r"categories"),
    ("start not at midnight", _set("start", "2025-10-01T08:00:00Z"), r"start.*midnight"),
    ("start without timezone", _set("start", "2025-10-01T00:00:00"), r"start.*timezone"),
    ("infinite sigma", _set("gmv_sigma", float("inf")), r"gmv_sigma"),
    ("zero days", _set("days", 0), r"days"),
]


def _scenario_world() -> dict[str, Any]:
    data = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))
    world: dict[str, Any] = data["world"]
    return world


def test_the_bundled_scenario_is_the_default_world() -> None:
    assert load_world_config(SCENARIO) == WorldConfig()


@pytest.mark.parametrize(("label", "patch", "match"), CASES, ids=[c[0] for c in CASES])
def test_malformed_world_config_names_the_field(
    tmp_path: Path, label: str, patch: Patch, match: str
) -> None:
    world = _scenario_world()
    patch(world)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"world": world}), encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as info:
        load_world_config(path)
    assert str(path) in str(info.value)


def test_unreadable_or_sectionless_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_world_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("world: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_world_config(bad)
    other = tmp_path / "other.yaml"
    other.write_text("experiment: {seeds: [1]}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no top-level 'world:' section"):
        load_world_config(other)
    empty = tmp_path / "empty.yaml"
    empty.write_text("world:\n", encoding="utf-8")
    assert load_world_config(empty) == WorldConfig()


def test_other_sections_are_left_to_their_owners(tmp_path: Path) -> None:
    path = tmp_path / "full.yaml"
    path.write_text(
        yaml.safe_dump({"world": {"days": 30}, "experiment": {"anything": 1}}), encoding="utf-8"
    )
    assert load_world_config(path).days == 30


def test_config_is_frozen() -> None:
    cfg = WorldConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.days = 3  # type: ignore[misc]
