"""The scenario experiment: a world, the strategies to compare, contracts, the grid.

One YAML file (``configs/wechat_entry.yaml``) holds the world (``world:``, see
:mod:`allocator.scenario.world`) and the sections below. Strategy engines are ordinary allocator
engine configs; the context and arm-feature sizes of contextual models default to the
world's, so a config names only what it chooses.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from allocator.config import (
    EngineConfig,
    PositiveFloat,
    StrictModel,
    check_known_groups,
    load_yaml,
    parse_config,
)
from allocator.constraints import ConstraintSet
from allocator.constraints.feasibility import check_caps_above_floors, check_caps_cover
from allocator.errors import ConfigError
from allocator.registry import MINI_SHOP
from allocator.scenario.world import WorldConfig
from allocator.scenario.world.world import (
    MERCHANT_PREFIX,
    TIER_NAMES,
    arm_feature_names,
    arm_ids,
    context_names,
)

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Scale = Literal["small", "default", "full"]
_IMPRESSIONS: dict[Scale, int] = {"small": 20_000, "default": 200_000, "full": 1_000_000}
#: the fewest impressions per cell (``experiment.impressions`` and ``--impressions``)
MIN_IMPRESSIONS = 1000
#: the most impressions per cell: a cell keeps ~40 bytes per impression for its contract
#: measurements (time, served group, groups offered, category, tier), ~4 GB at the bound
MAX_IMPRESSIONS = 100_000_000
#: the largest |z| the world's Box-Muller draw can give (its uniforms are multiples of
#: 2^-53 below 1): bounds the GMV log-normal tail exactly; the merchants' value levels
#: (numpy normals) get the same margin, which they pass with odds below 1e-16 each
Z_MAX = math.sqrt(-2.0 * math.log(2.0**-53))
#: an index as a JSON key spells it (``"10"``, not ``"010"``), short of Python's digit limit
_INDEX = re.compile(r"0|[1-9][0-9]{0,17}")


class ExperimentSettings(StrictModel):
    """How much to simulate and how to summarise it."""

    name: Name = "wechat_entry"
    #: builds the merchants (the same world for every cell); cell seeds drive traffic
    world_seed: Annotated[int, Field(ge=0)] = 7
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [1, 2]
    )
    #: impressions per cell at each ``--scale``
    impressions: dict[Scale, Annotated[int, Field(ge=MIN_IMPRESSIONS, le=MAX_IMPRESSIONS)]] = Field(
        default_factory=lambda: dict(_IMPRESSIONS)
    )
    #: impressions decided on one model state before their feedback is folded in
    feedback_batch: Annotated[int, Field(ge=1, le=100_000)] = 256
    #: points per curve (time bins over the simulated period)
    curve_points: Annotated[int, Field(ge=2, le=1000)] = 60
    #: share of the period, at its end, over which "Mini Shop share at the end" is measured
    end_share_window: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    #: reward units per unit of app value (GMV × take rate); keeps rewards O(1) for the models
    reward_scale: PositiveFloat = 0.1
    #: off-policy check in every cell: the cell's own log evaluates this strategy
    ope_target: Name | None = "static_split"
    ope_bootstrap: Annotated[int, Field(ge=10, le=10_000)] = 100

    @model_validator(mode="after")
    def _distinct_seeds(self) -> ExperimentSettings:
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ValueError(
                f"experiment.seeds: repeated {repeated}; a repeated seed is the same cell "
                "again, counted as another seed"
            )
        return self


class StaticSplitSpec(StrictModel):
    """Fixed traffic shares per group (the contract split); uniform within a group."""

    kind: Literal["static_split"] = "static_split"
    name: Name
    #: relative weights (finite, > 0): only their ratios matter
    shares: dict[Name, PositiveFloat]


class ExploreThenCommitSpec(StrictModel):
    """A/B test then commit: uniform for ``explore_days``, then greedy on what was learned."""

    kind: Literal["explore_then_commit"] = "explore_then_commit"
    name: Name
    explore_days: PositiveFloat = 14.0


class PolicySpec(StrictModel):
    """An allocator engine, optionally under a contract set (by name)."""

    kind: Literal["policy"] = "policy"
    name: Name
    engine: dict[str, Any]
    contracts: Name | None = None
    #: optional hyper-parameter sweep: dotted engine path -> values (one cell per value)
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct_sweep_values(self) -> PolicySpec:
        for path, values in self.sweep.items():
            spelled = [json.dumps(v, sort_keys=True, default=str) for v in values]
            repeated = [v for v, text in zip(values, spelled, strict=True)
                        if spelled.count(text) > 1]  # fmt: skip
            if repeated:
                raise ValueError(
                    f"{self.name}: sweep.{path} repeats {repeated[0]!r}: the same cells again"
                )
        return self


class OracleSpec(StrictModel):
    """The best candidate by the world's true expected value (reference, not a policy)."""

    kind: Literal["oracle"] = "oracle"
    name: Name


StrategySpec = Annotated[
    StaticSplitSpec | ExploreThenCommitSpec | PolicySpec | OracleSpec,
    Field(discriminator="kind"),
]


class ScenarioConfig(StrictModel):
    """Everything ``allocator run`` needs for a simulated scenario."""

    world: WorldConfig
    experiment: ExperimentSettings = ExperimentSettings()
    contracts: dict[Name, ConstraintSet] = Field(default_factory=dict)
    strategies: Annotated[list[StrategySpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _references(self) -> ScenarioConfig:
        names = [s.name for s in self.strategies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"strategy names must be unique, repeated: {dupes}")
        for i, s in enumerate(self.strategies):
            if isinstance(s, PolicySpec) and s.contracts and s.contracts not in self.contracts:
                raise ValueError(
                    f"strategies[{i}] ({s.name}): contracts {s.contracts!r} is not defined "
                    f"under contracts: {sorted(self.contracts)}"
                )
        target = self.experiment.ope_target
        if target is not None and target not in names:
            raise ValueError(f"experiment.ope_target {target!r} is not a strategy: {names}")
        self._check_groups()
        self._check_crosses()
        self._check_rewards()
        return self

    def _check_rewards(self) -> None:
        """Every policy strategy can learn the largest reward the world can produce.

        Refused here rather than clipped in the simulator: a clipped reward would change
        what the policies learn, and a reward past ``max_abs_reward`` otherwise fails a
        cell mid-run. The bound is the world's largest order value (tier and merchant
        value levels included) times the GMV tail at :data:`Z_MAX`, through the objective.
        """
        largest = max_order_values(self.world)
        objective = world_objective(self.world, self.experiment.reward_scale)
        arms, columns = arm_feature_names(self.world), context_names(self.world)
        for i, s in enumerate(self.strategies):
            if not isinstance(s, PolicySpec):
                continue
            for point, engine in sweep_points(s.engine, s.sweep):
                at = f" (sweep {point})" if point else ""
                try:
                    cfg = resolve_engine(engine, objective, arms, columns, "engine")
                except ValueError:
                    continue  # a bad engine is named when the strategy is built
                bound = cfg.policy.max_abs_reward
                if cfg.policy.kind == "factored_value":  # learns the GMV itself
                    what, top = "GMV", max(largest.values())
                else:
                    o = cfg.objective
                    rate = max(largest[g] * o.take_rates.get(g, o.default_take_rate)
                               for g in largest)  # fmt: skip
                    what, top = "reward", abs(o.click) + abs(o.order) + abs(o.gmv) * rate
                if not top <= bound:
                    raise ValueError(
                        f"strategies[{i}] ({s.name}){at}: the world's order values can give "
                        f"a {what} up to {top:.4g} per impression, past the engine's "
                        f"policy.max_abs_reward = {bound:g}; lower the order values or "
                        "experiment.reward_scale, or raise max_abs_reward"
                    )

    def _check_crosses(self) -> None:
        """Every feature and column a ``crosses`` names, in the engine and at each point of
        its sweep (which may set ``policy.crosses``), is one of the world's (resolved again,
        with the world's sizes, when the strategy is built)."""
        arms, columns = arm_feature_names(self.world), context_names(self.world)
        for i, s in enumerate(self.strategies):
            if not isinstance(s, PolicySpec):
                continue
            for point, engine in sweep_points(s.engine, s.sweep):
                policy = engine.get("policy")
                if isinstance(policy, dict) and "crosses" in policy:
                    at = f" (sweep {point})" if point else ""
                    where = f"strategies[{i}]{at}.engine.policy.crosses"
                    resolve_crosses(policy["crosses"], arms, columns, where)

    def _arm_group(self, arm: str) -> str | None:
        """The group of a world arm id: a partner is its own arm, merchants are Mini Shop
        (whether the id exists is checked when the strategy is built)."""
        if arm in {p.id for p in self.world.partners}:
            return arm
        return MINI_SHOP if arm.startswith(MERCHANT_PREFIX) else None

    def _group_arms(self, group: str) -> frozenset[str] | None:
        """The ids of a world group's arms (fixed by the world): a partner is its one arm."""
        if group != MINI_SHOP:
            return frozenset({group}) if group in {p.id for p in self.world.partners} else None
        return frozenset(arm_ids(self.world)[len(self.world.partners) :])

    def _check_scopes(self, name: str, contracts: ConstraintSet) -> None:
        """Every scope names an attribute and values the simulator sends, and every schedule
        meets the world's period: otherwise the contract would silently never apply."""
        valid = {"category": list(self.world.categories), "city_tier": list(TIER_NAMES)}
        start = self.world.start.timestamp()
        end = start + self.world.days * 86400.0
        for c in contracts.constraints:
            where = f"contracts.{name}.{c.name}"
            for attr, values in c.scope.items():
                if attr not in valid:
                    raise ValueError(
                        f"{where}: scope attribute {attr!r} is never sent by the scenario; "
                        f"expected one of {sorted(valid)}"
                    )
                unknown = [v for v in values if v not in valid[attr]]
                if unknown:
                    raise ValueError(
                        f"{where}: scope.{attr} has values {unknown} the world never sends; "
                        f"expected some of {valid[attr]}"
                    )
            s = c.schedule
            if s.end.timestamp() <= start or s.start.timestamp() >= end:
                raise ValueError(
                    f"{where}: schedule {s.start.isoformat()} to {s.end.isoformat()} lies "
                    f"outside the world's period {self.world.start.isoformat()} + "
                    f"{self.world.days} days: it would never apply"
                )

    def _check_groups(self) -> None:
        """Every group a contract, prior or take rate names is one of the world's; caps do
        not cap every group below 1, nor a group below a floor on its arms; scopes and
        schedules can apply."""
        groups = sorted({p.id for p in self.world.partners} | {MINI_SHOP})
        for name, contracts in self.contracts.items():
            targets = [getattr(c.target, "group", getattr(c.target, "cold_in_group", None))
                       for c in contracts.constraints]  # fmt: skip
            check_known_groups(f"contracts.{name} targets", filter(None, targets), groups)
            check_caps_cover(contracts.constraints, groups)
            check_caps_above_floors(contracts.constraints, self._arm_group, self._group_arms)
            self._check_scopes(name, contracts)
        for i, s in enumerate(self.strategies):
            if not isinstance(s, PolicySpec):
                continue
            for point, engine in sweep_points(s.engine, s.sweep):
                at = f" (sweep {point})" if point else ""
                for part, key in (("policy", "group_priors"), ("objective", "take_rates")):
                    mapping = engine.get(part, {}).get(key, {}) if isinstance(
                        engine.get(part, {}), dict) else {}  # fmt: skip
                    if isinstance(mapping, dict):
                        where = f"strategies[{i}]{at}.engine.{part}.{key}"
                        check_known_groups(where, mapping, groups)


def max_order_values(world: WorldConfig) -> dict[str, float]:
    """Per group, the largest GMV one order can have in ``world``: the category order
    value times the largest tier value factor (and merchant value level), times the
    log-normal GMV tail at :data:`Z_MAX`."""
    tail = math.exp(world.gmv_sigma * Z_MAX - 0.5 * world.gmv_sigma**2)
    out = {
        p.id: max(r.order_value for r in p.rates.values()) * max(p.effects.tier_value) * tail
        for p in world.partners
    }
    ms = world.mini_shop
    level = math.exp(ms.value_sd * Z_MAX - 0.5 * ms.value_sd**2)
    out[MINI_SHOP] = (
        max(r.order_value for r in ms.rates.values()) * max(ms.effects.tier_value) * level * tail
    )
    return out


def max_shown(world: WorldConfig) -> int:
    """The most candidates one impression of ``world`` can have: every partner and up to
    ``mini_shop.k`` merchants."""
    return len(world.partners) + min(world.mini_shop.k, world.mini_shop.n_merchants)


def check_impressions(n: Any) -> int:
    """An impressions override (``--impressions``), held to ``experiment.impressions``'
    bound, so that it fails before a launch and not inside every cell."""
    if type(n) is not int or not MIN_IMPRESSIONS <= n <= MAX_IMPRESSIONS:
        raise ConfigError(
            f"--impressions {n!r}: expected an integer from {MIN_IMPRESSIONS} to "
            f"{MAX_IMPRESSIONS} (as experiment.impressions)"
        )
    return n


def world_objective(world: WorldConfig, reward_scale: float) -> dict[str, Any]:
    """The reward every learning strategy optimises: app value (take rate + strategic
    weight for the Mini Shop) × ``reward_scale``."""
    rates = {p.id: float(p.take_rate) for p in world.partners}
    rates[MINI_SHOP] = min(1.0, world.mini_shop.take_rate + world.mini_shop.strategic_weight)
    return {"click": 0.0, "order": 0.0, "gmv": reward_scale, "take_rates": rates}


def load_scenario(path: str | Path) -> ScenarioConfig:
    """Read and validate a scenario YAML (``ConfigError`` names the bad field)."""
    data = load_yaml(path)
    if not isinstance(data, dict) or "world" not in data:
        raise ConfigError(f"{path}: a scenario config needs a top-level 'world:' section")
    cfg: ScenarioConfig = parse_config(ScenarioConfig, data, str(path))
    return cfg


def set_dotted(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``tree`` with ``a.b.c`` set to ``value``."""
    out = copy.deepcopy(tree)
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"sweep path {path!r}: {key!r} is not a mapping")
    node[keys[-1]] = value
    return out


def sweep_points(
    engine: dict[str, Any], sweep: dict[str, list[Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every combination of a sweep's values (one cell each) as ``({path: value}, the
    engine with them set)``, paths in sorted order; ``[({}, engine)]`` without a sweep."""
    keys = sorted(sweep)
    out = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        swept = engine
        for key, value in point.items():
            swept = set_dotted(swept, key, value)
        out.append((point, swept))
    return out


def _matches(name: object, names: Sequence[str], what: str, where: str) -> list[int]:
    """The indices ``name`` stands for: itself if an int (or its decimal spelling, as a
    JSON key has it), else every one of ``names`` it matches as a shell-style pattern
    (``sells_*``); a string matching none is an error. A negative int is refused here,
    as its JSON key (``"-1"``) would later read as a pattern that matches nothing."""
    if isinstance(name, int) and not isinstance(name, bool):
        if name < 0:
            raise ConfigError(f"{where}: {name} is not an index (indices count from 0)")
        return [name]
    if isinstance(name, str) and _INDEX.fullmatch(name):
        return [int(name)]
    if not isinstance(name, str):
        raise ConfigError(f"{where}: {name!r} is neither a {what} name nor an index")
    hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, name)]
    if not hits:
        raise ConfigError(f"{where}: {name!r} matches no {what} of the world: {list(names)}")
    return hits


def resolve_crosses(
    crosses: Any, arm_names: Sequence[str], columns: Sequence[str], where: str
) -> Any:
    """``factored_value``'s ``crosses`` with the world's arm feature and context column
    names (or shell-style patterns: ``sells_*: []``) turned into the indices the policy
    takes, so that a config keeps its meaning in a world with other partners or
    categories. A list of columns is the union of what its entries match; two keys naming
    one feature are an error. Anything but a mapping is left to the policy's validation."""
    if not isinstance(crosses, dict):
        return crosses
    out: dict[int, list[int]] = {}
    for key, value in crosses.items():
        features = _matches(key, arm_names, "arm feature", where)
        if not isinstance(value, list):
            raise ConfigError(f"{where}.{key}: expected a list of context columns")
        hits = [q for v in value for q in _matches(v, columns, "context column", f"{where}.{key}")]
        for i in features:
            if i in out:
                raise ConfigError(f"{where}: arm feature {i} is named by two keys")
            out[i] = list(dict.fromkeys(hits))
    return out


def resolve_engine(
    engine: dict[str, Any],
    objective: dict[str, Any],
    arm_names: Sequence[str],
    columns: Sequence[str],
    where: str,
    max_shown: int | None = None,
) -> EngineConfig:
    """Validate a strategy's engine, filling the world's sizes (its arm features
    ``arm_names`` and context ``columns``) and the objective, and turning the names in a
    ``crosses`` into indices. A size the engine sets must be the world's, and its
    ``max_candidates`` at least ``max_shown`` (see :func:`max_shown`), if given."""
    n_context, n_arm_features = len(columns), len(arm_names)
    data = copy.deepcopy(engine)
    policy = data.get("policy")
    if isinstance(policy, dict):
        if "crosses" in policy:
            policy["crosses"] = resolve_crosses(
                policy["crosses"], arm_names, columns, f"{where}.policy.crosses"
            )
        if policy.get("kind") in ("linear_gaussian", "logistic"):
            policy.setdefault("n_features", n_context)
        if policy.get("kind") in (
            "shared_linear",
            "shared_logistic",
            "hybrid_linear",
            "hybrid_logistic",
            "factored_value",
        ):
            policy.setdefault("n_context_features", n_context)
            policy.setdefault("n_arm_features", n_arm_features)
        if policy.get("kind") == "factored_value":
            policy.setdefault("objective", objective)
    data.setdefault("objective", objective)
    cfg: EngineConfig = parse_config(EngineConfig, data, where)
    _check_sizes(cfg, n_context, n_arm_features, max_shown, where)
    return cfg


def _check_sizes(
    cfg: EngineConfig, n_context: int, n_arm_features: int, max_shown: int | None, where: str
) -> None:
    """An engine's sizes meet the world's: a context or arm-feature width set in the
    config equals the world's (a mismatch fails every cell at its first impression), and
    ``max_candidates`` takes the most candidates one impression can have."""
    policy = cfg.policy
    context = "n_features" if hasattr(policy, "n_features") else "n_context_features"
    for field, have, want, what in (
        (context, policy.context_size, n_context, "context columns"),
        ("n_arm_features", policy.arm_feature_size, n_arm_features, "arm features"),
    ):
        if have is not None and have != want:
            raise ConfigError(
                f"{where}.policy.{field} = {have}, but the world has {want} {what}; "
                "leave it out to take the world's"
            )
    slots = getattr(policy, "max_candidates", None)
    if max_shown is not None and slots is not None and slots < max_shown:
        raise ConfigError(
            f"{where}.policy.max_candidates = {slots}, but one impression of the world can "
            f"have {max_shown} candidates (every partner and up to mini_shop.k merchants); "
            f"set it to at least {max_shown}"
        )
