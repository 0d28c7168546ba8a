"""Policies: a posterior family (declared state → kernels) with a decision rule.

:func:`make_policy` builds the right class from a validated config; the mapping is a table
keyed by the config's ``kind``, so adding a family is one class and one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from allocator.config import (
    BetaBernoulliConfig,
    EngineConfig,
    FactoredValueConfig,
    HybridLinearConfig,
    HybridLogisticConfig,
    LinearGaussianConfig,
    LogisticConfig,
    NormalGammaConfig,
    PolicyConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
    parse_config,
)
from allocator.errors import ConfigError
from allocator.policies.base import Policy
from allocator.policies.factored import FactoredValuePolicy, HybridClickFactoredPolicy
from allocator.policies.hybrid import HybridLinearPolicy, HybridLogisticPolicy
from allocator.policies.linear import LinearGaussianPolicy, SharedLinearPolicy
from allocator.policies.logistic import LogisticPolicy, SharedLogisticPolicy
from allocator.policies.per_arm import BetaBernoulliPolicy, NormalGammaPolicy
from allocator.registry import ArmRegistry

POLICY_CLASSES: dict[str, type[Policy]] = {
    "beta_bernoulli": BetaBernoulliPolicy,
    "normal_gamma": NormalGammaPolicy,
    "linear_gaussian": LinearGaussianPolicy,
    "shared_linear": SharedLinearPolicy,
    "logistic": LogisticPolicy,
    "shared_logistic": SharedLogisticPolicy,
    "hybrid_linear": HybridLinearPolicy,
    "hybrid_logistic": HybridLogisticPolicy,
    "factored_value": FactoredValuePolicy,
}

POLICY_CONFIGS = (
    BetaBernoulliConfig, NormalGammaConfig, LinearGaussianConfig, SharedLinearConfig,
    LogisticConfig, SharedLogisticConfig, HybridLinearConfig, HybridLogisticConfig,
    FactoredValueConfig,
)  # fmt: skip


def policy_class(config: PolicyConfig) -> type[Policy]:
    """The class implementing ``config``: its kind's, except a factored value model with a
    hybrid click, whose state and update are its own."""
    if isinstance(config, FactoredValueConfig) and config.click_model == "hybrid":
        return HybridClickFactoredPolicy
    return POLICY_CLASSES[config.kind]


def make_policy(
    config: PolicyConfig | Mapping[str, Any], registry: ArmRegistry, seed: int,
    arm_features: Any = None,
) -> Policy:  # fmt: skip
    """Build the policy for ``config.kind`` over the arms of ``registry``; ``config`` may be
    a mapping (as the YAML would read), validated into its family's config first."""
    if isinstance(config, Mapping):
        config = parse_config(EngineConfig, {"policy": dict(config)}, "<policy mapping>").policy
    if not isinstance(config, POLICY_CONFIGS):
        raise ConfigError(
            f"config must be a policy config or a mapping, got {type(config).__name__}"
        )
    cls: Any = policy_class(config)
    policy: Policy = cls(config, registry, seed, arm_features)
    return policy


__all__ = [
    "POLICY_CLASSES",
    "BetaBernoulliPolicy",
    "FactoredValuePolicy",
    "HybridClickFactoredPolicy",
    "HybridLinearPolicy",
    "HybridLogisticPolicy",
    "LinearGaussianPolicy",
    "LogisticPolicy",
    "NormalGammaPolicy",
    "Policy",
    "PolicyConfig",
    "SharedLinearPolicy",
    "SharedLogisticPolicy",
    "make_policy",
    "policy_class",
]
