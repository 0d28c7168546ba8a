"""Validated configuration of the learning policy and the reward objective (pydantic v2).

One concept per module: :mod:`.base` (strict models, number types, error formatting),
:mod:`.policies` (one model per posterior family), :mod:`.objective` (outcome → reward),
:mod:`.engine` (a policy plus its objective, and its YAML loader). Everything is imported
from here.
"""

from allocator.config.base import (
    FiniteFloat,
    GroupName,
    PositiveFloat,
    Probability,
    StrictModel,
    parse_config,
)
from allocator.config.engine import (
    EngineConfig,
    check_group_names,
    check_known_groups,
    load_engine_config,
)
from allocator.config.objective import ObjectiveConfig
from allocator.config.policies import (
    RULE_CODES,
    BetaBernoulliConfig,
    BetaPrior,
    FactoredValueConfig,
    HybridLinearConfig,
    HybridLogisticConfig,
    LinearGaussianConfig,
    LinearPrior,
    LogisticConfig,
    NormalGammaConfig,
    NormalGammaPrior,
    OffsetPrior,
    PolicyConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
)
from allocator.config_files import load_yaml  # configs are read through here

__all__ = [
    "RULE_CODES",
    "BetaBernoulliConfig",
    "BetaPrior",
    "EngineConfig",
    "FactoredValueConfig",
    "FiniteFloat",
    "GroupName",
    "HybridLinearConfig",
    "HybridLogisticConfig",
    "LinearGaussianConfig",
    "LinearPrior",
    "LogisticConfig",
    "NormalGammaConfig",
    "NormalGammaPrior",
    "ObjectiveConfig",
    "OffsetPrior",
    "PolicyConfig",
    "PositiveFloat",
    "Probability",
    "SharedLinearConfig",
    "SharedLogisticConfig",
    "StrictModel",
    "check_group_names",
    "check_known_groups",
    "load_engine_config",
    "load_yaml",
    "parse_config",
]
