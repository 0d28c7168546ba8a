"""Outcomes → reward, with per-group take rates.

Partners pay the app a revenue share on GMV and Mini Shop merchants a commission; both are
a group's ``take_rate``. The reward the policies learn is
``w_click·click + w_order·order + w_gmv·gmv·take_rate[group]``.
"""

from __future__ import annotations

import numpy as np

from allocator.config import ObjectiveConfig
from allocator.errors import InvalidInputError
from allocator.registry import ArmRegistry


class Objective:
    """Vectorised reward of outcome arrays for arms of known groups."""

    def __init__(self, config: ObjectiveConfig, registry: ArmRegistry) -> None:
        self.config = config
        self._registry = registry

    def take_rates(self, arms: np.ndarray) -> np.ndarray:
        """Take rate of each arm's group."""
        groups = self._registry.groups
        table = np.array(
            [self.config.take_rates.get(g, self.config.default_take_rate) for g in groups]
            or [self.config.default_take_rate],
            dtype=np.float64,
        )
        return table[self._registry.arm_group[np.asarray(arms, dtype=np.int64)]]

    def reward_one(self, arm: int, click: float, order: float, gmv: float) -> float:
        """Scalar reward for one validated outcome (the serving hot path)."""
        group = self._registry.group_of(arm)
        rate = self.config.take_rates.get(group, self.config.default_take_rate)
        c = self.config
        return c.click * click + c.order * order + c.gmv * gmv * rate

    def reward(
        self,
        arms: np.ndarray,
        click: np.ndarray | float = 0.0,
        order: np.ndarray | float = 0.0,
        gmv: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Reward of each outcome; rejects NaN, infinite or negative outcomes."""
        arms = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        parts = {}
        for name, value in (("click", click), ("order", order), ("gmv", gmv)):
            arr = np.broadcast_to(np.asarray(value, dtype=np.float64), arms.shape)
            bad = ~np.isfinite(arr) | (arr < 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InvalidInputError(
                    f"outcome {name}[{i}] = {arr[i]!r}: expected a finite value >= 0"
                )
            parts[name] = arr
        c = self.config
        return (
            c.click * parts["click"]
            + c.order * parts["order"]
            + c.gmv * parts["gmv"] * self.take_rates(arms)
        )
