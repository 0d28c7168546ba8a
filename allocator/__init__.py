"""entry-alloc: constrained Thompson-sampling allocation of a shopping entry's traffic.

Importing the package never starts Ray, MLflow or any thread; kernels compile on first
use (cached on disk).
"""

from allocator.config import (
    BetaBernoulliConfig,
    EngineConfig,
    FactoredValueConfig,
    HybridLinearConfig,
    HybridLogisticConfig,
    LinearGaussianConfig,
    LogisticConfig,
    NormalGammaConfig,
    ObjectiveConfig,
    SharedLinearConfig,
    SharedLogisticConfig,
    load_engine_config,
)
from allocator.decisions import Decision, Decisions
from allocator.engine import Engine
from allocator.errors import (
    AllocatorError,
    ConfigError,
    EvaluationRefused,
    InvalidInputError,
    SnapshotError,
    UnknownArmError,
)
from allocator.objective import Objective
from allocator.policies import (
    BetaBernoulliPolicy,
    FactoredValuePolicy,
    HybridLinearPolicy,
    HybridLogisticPolicy,
    LinearGaussianPolicy,
    LogisticPolicy,
    NormalGammaPolicy,
    Policy,
    SharedLinearPolicy,
    SharedLogisticPolicy,
    make_policy,
)
from allocator.registry import ArmRegistry, IntIds
from allocator.serving import (
    Allocator,
    AllocatorConfig,
    Outcome,
    UpdateStatus,
    load_allocator_config,
)
from allocator.version import __version__

__all__ = [
    "Allocator",
    "AllocatorConfig",
    "AllocatorError",
    "ArmRegistry",
    "BetaBernoulliConfig",
    "BetaBernoulliPolicy",
    "ConfigError",
    "Decision",
    "Decisions",
    "Engine",
    "EngineConfig",
    "EvaluationRefused",
    "FactoredValueConfig",
    "FactoredValuePolicy",
    "HybridLinearConfig",
    "HybridLinearPolicy",
    "HybridLogisticConfig",
    "HybridLogisticPolicy",
    "IntIds",
    "InvalidInputError",
    "LinearGaussianConfig",
    "LinearGaussianPolicy",
    "LogisticConfig",
    "LogisticPolicy",
    "NormalGammaConfig",
    "NormalGammaPolicy",
    "Objective",
    "ObjectiveConfig",
    "Outcome",
    "Policy",
    "SharedLinearConfig",
    "SharedLinearPolicy",
    "SharedLogisticConfig",
    "SharedLogisticPolicy",
    "SnapshotError",
    "UnknownArmError",
    "UpdateStatus",
    "__version__",
    "load_allocator_config",
    "load_engine_config",
    "make_policy",
]
