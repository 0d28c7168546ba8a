"""The embedded serving facade and its configuration."""

from allocator.serving.allocator import Allocator, UpdateStatus
from allocator.serving.config import (
    AllocatorConfig,
    ArmSpec,
    Outcome,
    ServingConfig,
    load_allocator_config,
)

__all__ = [
    "Allocator",
    "AllocatorConfig",
    "ArmSpec",
    "Outcome",
    "ServingConfig",
    "UpdateStatus",
    "load_allocator_config",
]
