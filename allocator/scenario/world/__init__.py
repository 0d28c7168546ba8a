"""The simulated WeChat shopping entry: partners, Mini Shop merchants, traffic and truth.

``World(load_world_config(path), seed)`` builds the arms; ``World.stream`` yields
:class:`Chunk` s of impressions with the exact truth of every candidate, and
``World.draw_outcomes`` draws click, order and GMV for the chosen candidates.
"""

from allocator.scenario.world.config import WorldConfig, load_world_config
from allocator.scenario.world.world import Chunk, World

__all__ = ["Chunk", "World", "WorldConfig", "load_world_config"]
