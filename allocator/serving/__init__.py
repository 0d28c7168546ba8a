"""The embedded serving facade and its configuration."""

from allocator.serving.allocator import Allocator
from allocator.serving.config import (
    AllocatorConfig,
    ArmSpec,
    Outcome,
    ServingConfig,
    load_allocator_config,
)
from allocator.serving.feedback import UpdateStatus

__all__ = [
    "Allocator",
    "AllocatorConfig",
    "ArmSpec",
    "Outcome",
    "ServingConfig",
    "UpdateStatus",
    "load_allocator_config",
]
