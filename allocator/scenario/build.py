"""From a scenario config to grid cells and strategy objects.

The grid is strategy (× sweep values) × seed. Every cell's strategy is built once on the
driver before anything is launched, so a bad engine fails fast with the field named, not
minutes later inside a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allocator.config import ObjectiveConfig
from allocator.constraints import ConstraintSet
from allocator.errors import ConfigError
from allocator.scenario.config import (
    ExploreThenCommitSpec,
    OracleSpec,
    PolicySpec,
    ScenarioConfig,
    StaticSplitSpec,
    max_shown,
    resolve_engine,
    sweep_points,
    world_objective,
)
from allocator.scenario.strategies import (
    ExploreThenCommit,
    Oracle,
    PolicyStrategy,
    ScenarioArms,
    StaticSplit,
    Strategy,
)
from allocator.scenario.world import World
from allocator.scenario.world.world import TIER_NAMES, arm_feature_names, context_names


@dataclass(frozen=True)
class CellTask:
    """One grid cell (small: it travels with the task)."""

    name: str
    strategy: str
    seed: int
    n_impressions: int
    coords: dict[str, str]
    spec: dict[str, Any]  # the resolved strategy spec (sweep values applied)
    #: write the cell's decision log (Parquet + replay config) into this directory
    log_dir: str | None = None
    #: seeds the strategy's own randomness when set (``seed`` still draws the traffic and
    #: outcomes): replicates of one strategy on the same impressions, apart only in its draws
    policy_seed: int | None = None


def scenario_arms(world: World) -> ScenarioArms:
    group_names = tuple(dict.fromkeys(world.arm_groups))
    return ScenarioArms(
        ids=tuple(world.arm_ids),
        groups=tuple(world.arm_groups),
        group_names=group_names,
        features=np.ascontiguousarray(world.arm_features, dtype=np.float64),
        categories=tuple(world.categories),
        city_tiers=TIER_NAMES,
        feature_names=world.arm_feature_names,
        context_names=world.context_names,
    )


def scenario_objective(scenario: ScenarioConfig, world: World) -> dict[str, Any]:
    """The reward every learning strategy optimises: app value (take rate + strategic) × scale."""
    return world_objective(scenario.world, scenario.experiment.reward_scale)


def build_strategy(
    spec: dict[str, Any], scenario: ScenarioConfig, world: World, arms: ScenarioArms, seed: int
) -> Strategy:
    kind = spec["kind"]
    objective = scenario_objective(scenario, world)
    if kind == "static_split":
        return StaticSplit(StaticSplitSpec.model_validate(spec), arms, seed)
    if kind == "oracle":
        return Oracle(OracleSpec.model_validate(spec).name, seed)
    if kind == "explore_then_commit":
        return ExploreThenCommit(
            ExploreThenCommitSpec.model_validate(spec), ObjectiveConfig.model_validate(objective),
            arms, seed, world.start_s,
        )  # fmt: skip
    p = PolicySpec.model_validate(spec)
    engine = resolve_engine(
        p.engine, objective, arms.feature_names, arms.context_names, f"strategy {p.name}.engine",
        max_shown(scenario.world),
    )  # fmt: skip
    contracts: ConstraintSet | None = scenario.contracts[p.contracts] if p.contracts else None
    return PolicyStrategy(p.name, engine, arms, seed, contracts)


def optimises_app_value(spec: dict[str, Any], scenario: ScenarioConfig) -> bool:
    """Whether a cell's strategy ``spec`` (sweep values applied) is an engine whose
    objective is the world's (app value × ``reward_scale``), so that its model's
    estimates, and the constraint layer's cost from them, are in app value."""
    if spec.get("kind") != "policy":
        return False
    p = PolicySpec.model_validate(spec)
    objective = world_objective(scenario.world, scenario.experiment.reward_scale)
    engine = resolve_engine(
        p.engine, objective, arm_feature_names(scenario.world), context_names(scenario.world),
        f"strategy {p.name}.engine",
    )  # fmt: skip
    return bool(engine.objective == ObjectiveConfig.model_validate(objective))


def replay_candidates(scenario: ScenarioConfig, world: World) -> tuple[dict[str, Any], ...]:
    """The launch's learning strategies as replay policy entries (engines with the world's
    sizes and objective, their contracts as ``constraints``; a sweep's base engine), so an
    emitted log's replay config evaluates them on it. Only engines that optimise the app
    value, the log's reward column, are proposed (see :func:`replay_left_out`)."""
    return replay_split(scenario, world)[0]


def replay_left_out(scenario: ScenarioConfig, world: World) -> tuple[str, ...]:
    """The learning strategies an emitted log's replay config leaves out, each with why."""
    return replay_split(scenario, world)[1]


def replay_split(
    scenario: ScenarioConfig, world: World
) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """(the replay entries, the strategies left out with why): a log's reward column is the
    app value per impression, so a strategy with another objective (orders, clicks) would
    learn from rewards it was not built for (a Beta–Bernoulli one refuses them)."""
    arms = scenario_arms(world)
    objective = scenario_objective(scenario, world)
    app_value = ObjectiveConfig.model_validate(objective)
    out, left_out = [], []
    for spec in scenario.strategies:
        if not isinstance(spec, PolicySpec):
            continue
        engine = resolve_engine(
            spec.engine, objective, arms.feature_names, arms.context_names,
            f"strategy {spec.name}.engine", max_shown(scenario.world),
        )  # fmt: skip
        if engine.objective != app_value or getattr(engine.policy, "BERNOULLI_REWARDS", False):
            left_out.append(
                f"{spec.name}: its objective is not the app value, the log's reward column"
            )
            continue
        # what differs from the defaults, and the policy's kind (its tag)
        dumped = engine.model_dump(mode="json", exclude_defaults=True)
        dumped["policy"] = {"kind": engine.policy.kind, **dumped.get("policy", {})}
        entry: dict[str, Any] = {"name": spec.name, "mode": "learning", "engine": dumped}
        if spec.contracts:
            entry["constraints"] = scenario.contracts[spec.contracts].model_dump(mode="json")
        out.append(entry)
    return tuple(out), tuple(left_out)


def grid_cells(scenario: ScenarioConfig, world: World, n_impressions: int) -> list[CellTask]:
    """Expand strategies × sweeps × seeds, validating every cell's strategy on the driver,
    and the replay candidates, whose engine for a sweep is its base engine, which no
    cell runs (an emitted log's replay config is written by the cells)."""
    replay_candidates(scenario, world)
    arms = scenario_arms(world)
    cells = []
    for spec in scenario.strategies:
        base = spec.model_dump(mode="json")
        variants: list[tuple[str, dict[str, Any], dict[str, str]]] = [(spec.name, base, {})]
        if isinstance(spec, PolicySpec) and spec.sweep:
            variants = []
            for point, engine in sweep_points(base["engine"], spec.sweep):
                coords = {f"sweep.{key}": str(value) for key, value in point.items()}
                label = ",".join(f"{key.split('.')[-1]}={v}" for key, v in point.items())
                variants.append((f"{spec.name}[{label}]", {**base, "engine": engine}, coords))
        for name, resolved, coords in variants:
            try:
                build_strategy(resolved, scenario, world, arms, 0)
            except ConfigError:
                raise
            except ValueError as err:
                raise ConfigError(f"strategy {name}: {err}") from None
            for seed in scenario.experiment.seeds:
                cells.append(
                    CellTask(
                        name=f"{name}/seed={seed}",
                        strategy=name,
                        seed=seed,
                        n_impressions=n_impressions,
                        coords={
                            "strategy": name,
                            "kind": spec.kind,
                            "seed": str(seed),
                            "contracts": str(getattr(spec, "contracts", None) or "none"),
                            **coords,
                        },
                        spec=resolved,
                    )
                )
    return cells
