"""entry-alloc: constrained Thompson-sampling allocation of a shopping entry's traffic.

Importing the package never starts Ray, MLflow or any thread; kernels compile on first
use (cached on disk).
"""

from allocator.config import (
    BetaBernoulliConfig,
    EngineConfig,
    LinearGaussianConfig,
    NormalGammaConfig,
    ObjectiveConfig,
    SharedLinearConfig,
    load_engine_config,
)
from allocator.errors import AllocatorError, ConfigError, InvalidInputError, UnknownArmError
from allocator.objective import Objective
from allocator.policies import (
    BatchChoice,
    BetaBernoulliPolicy,
    Choice,
    LinearGaussianPolicy,
    NormalGammaPolicy,
    Policy,
    SharedLinearPolicy,
    make_policy,
)
from allocator.registry import ArmRegistry

__version__ = "0.1.0"

__all__ = [
    "AllocatorError",
    "ArmRegistry",
    "BatchChoice",
    "BetaBernoulliConfig",
    "BetaBernoulliPolicy",
    "Choice",
    "ConfigError",
    "EngineConfig",
    "InvalidInputError",
    "LinearGaussianConfig",
    "LinearGaussianPolicy",
    "NormalGammaConfig",
    "NormalGammaPolicy",
    "Objective",
    "ObjectiveConfig",
    "Policy",
    "SharedLinearConfig",
    "SharedLinearPolicy",
    "UnknownArmError",
    "__version__",
    "load_engine_config",
    "make_policy",
]
