"""The engine: a policy, its contracts and its arm catalogue behind one decision pipeline."""

from allocator.engine.engine import Engine, given_id

__all__ = ["Engine", "given_id"]
