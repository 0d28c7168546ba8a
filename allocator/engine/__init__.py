"""The engine: a policy, its contracts and its arm catalogue behind one decision pipeline."""

from allocator.engine.engine import Engine

__all__ = ["Engine"]
