"""Validated configuration of the reward objective: how an outcome becomes a reward."""

from __future__ import annotations

from pydantic import Field, model_validator

from allocator.config.base import FiniteFloat, GroupName, Probability, StrictModel


class ObjectiveConfig(StrictModel):
    """Reward = click·w_click + order·w_order + gmv·take_rate[group]·w_gmv.

    Partners pay a revenue share and Mini Shop merchants a commission: both are the
    ``take_rates`` of their group; groups not listed use ``default_take_rate``.
    """

    click: FiniteFloat = 0.0
    order: FiniteFloat = 1.0
    gmv: FiniteFloat = 0.0
    take_rates: dict[GroupName, Probability] = Field(default_factory=dict)
    default_take_rate: Probability = 0.0

    @model_validator(mode="after")
    def _some_weight(self) -> ObjectiveConfig:
        if self.click == 0.0 and self.order == 0.0 and self.gmv == 0.0:
            raise ValueError("objective weights click, order and gmv are all 0: nothing to learn")
        return self
