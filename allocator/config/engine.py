"""The engine's configuration (a policy plus its objective), its group-name checks and its
YAML loader. Deployment settings (tracking URI, Ray address) are not science configuration
and do not live here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

from pydantic import model_validator

from allocator.config.base import StrictModel, parse_config
from allocator.config.objective import ObjectiveConfig
from allocator.config.policies import FactoredValueConfig, PolicyConfig
from allocator.config_files import load_yaml
from allocator.errors import brief


class EngineConfig(StrictModel):
    """A policy plus the objective that turns outcomes into its reward."""

    policy: PolicyConfig
    objective: ObjectiveConfig = ObjectiveConfig()

    @model_validator(mode="after")
    def _bernoulli_rewards(self) -> EngineConfig:
        o = self.objective
        if self.policy.BERNOULLI_REWARDS and (
            o.gmv != 0.0 or min(o.click, o.order) < 0.0 or o.click + o.order > 1.0
        ):
            raise ValueError(
                f"policy {self.policy.kind} learns rewards in [0, 1]: the objective must weigh "
                f"click and order with non-negative weights summing to at most 1 and gmv 0 "
                f"(got click={o.click}, order={o.order}, gmv={o.gmv}); use normal_gamma or a "
                "linear policy for revenue"
            )
        if abs(o.click) + abs(o.order) > self.policy.max_abs_reward:
            raise ValueError(
                f"objective click={o.click} and order={o.order}: an ordered impression would be "
                f"worth more than policy.max_abs_reward = {self.policy.max_abs_reward:g}, "
                "and every such reward would be refused"
            )
        if isinstance(self.policy, FactoredValueConfig) and self.policy.objective != o:
            raise ValueError(
                "policy factored_value values outcomes with its own objective, which must "
                "equal engine.objective (the reward logged and reported): set both alike"
            )
        return self


def check_known_groups(where: str, names: Iterable[str], groups: Collection[str]) -> None:
    """Raise ``ValueError`` naming the ``names`` that are not among ``groups`` (a typo in a
    group-keyed mapping would otherwise fall back to the defaults silently)."""
    unknown = sorted(set(names) - set(groups))
    if unknown:
        raise ValueError(
            f"{where}: unknown groups {_listed(unknown)}; known groups: {_listed(sorted(groups))}"
        )


def _listed(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(brief(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


def check_group_names(engine: EngineConfig, groups: Collection[str]) -> None:
    """:func:`check_known_groups` for every group-keyed mapping of ``engine``."""
    check_known_groups(
        "engine.policy.group_priors", getattr(engine.policy, "group_priors", {}), groups
    )
    check_known_groups("engine.objective.take_rates", engine.objective.take_rates, groups)


def load_engine_config(path: str | Path) -> EngineConfig:
    """Load and validate an :class:`EngineConfig` from a YAML file."""
    cfg: EngineConfig = parse_config(EngineConfig, load_yaml(path), str(path))
    return cfg
