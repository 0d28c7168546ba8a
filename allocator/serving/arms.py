"""The configured catalogue as a registry and arm features: listed inline or in a file."""

from __future__ import annotations

import numpy as np

from allocator.arms_file import read_arms_file
from allocator.constraints.config import ArmTarget
from allocator.errors import ConfigError
from allocator.registry import ArmRegistry
from allocator.serving.config import AllocatorConfig


def build_catalogue(cfg: AllocatorConfig) -> tuple[ArmRegistry, np.ndarray | None]:
    """The registry of ``cfg``'s arms and their (n, w) features (None when the policy
    weighs none). An ``arms_file`` is read and checked column by column; a constraint on
    one arm must then name an arm of the file."""
    policy = cfg.engine.policy
    if cfg.arms_file is None:
        registry = ArmRegistry.build([a.id for a in cfg.arms], [a.group for a in cfg.arms])
        if not policy.USES_ARM_FEATURES:
            return registry, None
        return registry, np.array([a.features for a in cfg.arms], dtype=np.float64)
    width = policy.arm_feature_size if policy.USES_ARM_FEATURES else None
    arms = read_arms_file(cfg.arms_file.path, cfg.arms_file.groups, width)
    for c in cfg.constraints.constraints:
        if isinstance(c.target, ArmTarget) and not arms.registry.knows(c.target.arm):
            raise ConfigError(
                f"constraint {c.name!r}: unknown target arm {c.target.arm!r} "
                f"(not in arms file {cfg.arms_file.path})"
            )
    return arms.registry, arms.features
