"""Configuration of an embedded :class:`~allocator.serving.Allocator`.

Science (policy, objective, contracts, arms) and serving behaviour (reward wait, pending
capacity, refresh cadence) are validated together because they must agree (feature
counts, arm features, known groups: every group named by a target, a prior or a take rate
is one of the arms' groups, and caps do not cap every group below 1). Deployment settings
(log directory, autosave path) are arguments of the allocator, not part of this model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, model_validator

from allocator.config import (
    EngineConfig,
    FiniteFloat,
    GroupName,
    PositiveFloat,
    StrictModel,
    check_group_names,
    load_yaml,
    parse_config,
)
from allocator.constraints.config import ArmTarget, ColdArmsTarget, ConstraintSet, GroupTarget
from allocator.constraints.feasibility import check_caps_cover
from allocator.errors import ConfigError

NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
#: Arms listed in a config (larger catalogues grow through ``Allocator.add_arms``).
MAX_CONFIG_ARMS = 1 << 20


class ArmSpec(StrictModel):
    """One destination: a partner platform (its own group) or a Mini Shop merchant."""

    id: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]
    group: GroupName
    features: list[FiniteFloat] | None = None


class ArmsFile(StrictModel):
    """A catalogue too large to list inline: a Parquet or Arrow IPC file with columns
    ``id``, ``group`` and (for shared models) ``features``; see :mod:`allocator.arms_file`.
    ``groups`` are the groups its rows may name (a typo in the file is then an error, and
    the constraints and priors are checked against them before the file is read). A
    relative ``path`` is taken from the working directory."""

    path: Annotated[str, Field(min_length=1)]
    groups: Annotated[list[GroupName], Field(min_length=1, max_length=4096)]

    @model_validator(mode="after")
    def _distinct(self) -> ArmsFile:
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"arms_file.groups repeats a name: {self.groups}")
        return self


def _amount(value: Any) -> Any:
    """A real number as given (int or float, Python or numpy); a bool, string or Decimal
    is refused rather than read as one (``True`` is not an order, ``"1"`` not a count)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise ValueError(f"expected a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError("an integer beyond float64 range") from None


#: an outcome's amount: a non-negative finite real number, never a coerced bool or string
Amount = Annotated[float, BeforeValidator(_amount), Field(ge=0.0, allow_inf_nan=False)]


class Outcome(StrictModel):
    """What happened after a decision; missing fields count as 0."""

    click: Amount = 0.0
    order: Amount = 0.0
    gmv: Amount = 0.0


class ServingConfig(StrictModel):
    """Feedback handling, refresh cadence, and whose time the allocator runs on.

    Decisions wait ``reward_wait_s`` for feedback, then learn ``default_outcome`` exactly
    once. At most ``pending_capacity`` decisions wait; beyond it the oldest is expired early
    (and counted as evicted). The posterior refreshes every ``policy.refresh_every`` updates
    or ``refresh_every_s`` seconds, whichever comes first. Decision timestamps may go back by
    ``max_clock_skew_s`` at most (later ones are rejected). ``time`` says whose clock: the
    caller's event time (``event``: every call carries a timestamp), the allocator's own
    (``wall``: none does), or ``auto`` (fixed by the first call); see
    :mod:`allocator.serving.clock`. ``on_log_error`` and ``on_autosave_error`` say what a
    failing decision log or autosave does to serving (:mod:`allocator.serving.sinks`).
    """

    reward_wait_s: PositiveFloat = 3600.0
    default_outcome: Outcome = Outcome()
    pending_capacity: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000
    refresh_every_s: PositiveFloat | None = 5.0
    max_clock_skew_s: NonNegative = 5.0
    time: Literal["auto", "event", "wall"] = "auto"
    max_time_jump_s: PositiveFloat = 30 * 86_400.0
    feature_names: list[Annotated[str, Field(min_length=1)]] | None = None
    on_log_error: Literal["drop", "raise"] = "drop"
    on_autosave_error: Literal["skip", "raise"] = "skip"


class AllocatorConfig(StrictModel):
    """Everything an allocator needs: engine, contracts, arms, serving behaviour."""

    engine: EngineConfig
    constraints: ConstraintSet = ConstraintSet()
    arms: Annotated[list[ArmSpec], Field(default_factory=list, max_length=MAX_CONFIG_ARMS)]
    arms_file: ArmsFile | None = None
    serving: ServingConfig = ServingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> AllocatorConfig:
        if bool(self.arms) == (self.arms_file is not None):
            raise ValueError("arms: list at least one arm, or name an arms_file (not both)")
        ids = Counter(a.id for a in self.arms)
        dupes = sorted(i for i, n in ids.items() if n > 1)
        if dupes:
            raise ValueError(f"arms: ids must be unique, repeated: {dupes[:5]}")
        check_serving(self.engine, self.serving)
        policy = self.engine.policy
        for arm in self.arms:
            width = policy.arm_feature_size
            if width is not None:
                if arm.features is None or len(arm.features) != width:
                    raise ValueError(
                        f"arms: {arm.id!r} needs features of length {width} "
                        f"for the shared model ({policy.kind})"
                    )
            elif arm.features is not None:
                raise ValueError(f"arms: {arm.id!r} has features, but {policy.kind} uses none")
        groups = {a.group for a in self.arms} or set(
            self.arms_file.groups if self.arms_file else ()
        )
        for c in self.constraints.constraints:
            t = c.target
            if isinstance(t, ArmTarget) and self.arms and t.arm not in ids:  # else at load
                raise ValueError(f"constraint {c.name!r}: unknown target arm {t.arm!r}")
        check_groups(self.engine, self.constraints, groups)
        return self


def check_serving(engine: EngineConfig, serving: ServingConfig) -> None:
    """The rules between the serving settings and the policy (no arm list needed, so a
    snapshot's config is held to them too): ``ValueError`` naming the setting."""
    policy = engine.policy
    names = serving.feature_names
    want = policy.context_size
    if names is not None and want is None:
        raise ValueError(f"serving.feature_names given, but policy {policy.kind} takes no context")
    if names is not None and len(names) != want:
        raise ValueError(f"serving.feature_names has {len(names)} names, the policy expects {want}")
    default = serving.default_outcome
    if policy.BERNOULLI_REWARDS and max(default.click, default.order) > 1.0:
        raise ValueError(
            f"serving.default_outcome: click and order must be at most 1 for {policy.kind} "
            f"(got click={default.click}, order={default.order})"
        )
    o = engine.objective
    rate = max([o.default_take_rate, *o.take_rates.values()])
    worth = abs(default.click * o.click) + abs(default.order * o.order)
    worth += abs(default.gmv * o.gmv) * rate
    if worth > policy.max_abs_reward:
        raise ValueError(
            f"serving.default_outcome is worth up to {worth:g} under the objective, more than "
            f"policy.max_abs_reward = {policy.max_abs_reward:g}: every expiry would be refused"
        )


def check_groups(engine: EngineConfig, constraints: ConstraintSet, groups: set[str]) -> None:
    """Every group the contracts, priors and take rates name is one of the catalogue's
    ``groups``, and caps do not cap every group below 1: ``ValueError`` naming it."""
    for c in constraints.constraints:
        t = c.target
        target_group = (
            t.group if isinstance(t, GroupTarget)
            else t.cold_in_group if isinstance(t, ColdArmsTarget)
            else None
        )  # fmt: skip
        if target_group is not None and target_group not in groups:
            raise ValueError(f"constraint {c.name!r}: unknown target group {target_group!r}")
    check_group_names(engine, groups)
    check_caps_cover(constraints.constraints, sorted(groups))


def load_allocator_config(path: str | Path) -> AllocatorConfig:
    """Load and validate an :class:`AllocatorConfig` from YAML."""
    cfg: AllocatorConfig = parse_config(AllocatorConfig, load_yaml(path), str(path))
    return cfg


def as_allocator_config(
    config: AllocatorConfig | Mapping[str, Any] | str | Path,
) -> AllocatorConfig:
    """A validated config from a config, a mapping (as the YAML would read) or a YAML path."""
    if isinstance(config, AllocatorConfig):
        return config
    if isinstance(config, Mapping):
        parsed: AllocatorConfig = parse_config(AllocatorConfig, config, "<mapping>")
        return parsed
    if isinstance(config, (str, Path)):
        return load_allocator_config(config)
    raise ConfigError(
        f"config must be an AllocatorConfig, a mapping or a YAML path, got {type(config).__name__}"
    )


def config_without_arms(data: Mapping[str, Any]) -> AllocatorConfig:
    """A saved configuration: its parts are validated, its arms come from the registry.

    The whole config was validated (arms included) when the allocator was built; a
    restored allocator's ``config.arms`` is empty and its registry holds the catalogue, so
    catalogues of millions of merchants load in array time.
    """
    engine = EngineConfig.model_validate(data["engine"])
    serving = ServingConfig.model_validate(data["serving"])
    check_serving(engine, serving)
    return AllocatorConfig.model_construct(
        engine=engine,
        constraints=ConstraintSet.model_validate(data["constraints"]),
        serving=serving,
        arms=[],
    )
