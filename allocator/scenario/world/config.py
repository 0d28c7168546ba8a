"""Validated configuration of the simulated shopping-entry world.

The defaults are the bundled WeChat scenario (also spelled out in
``configs/wechat_entry.yaml``): 120 days from 2025-10-01T00:00Z, Double-11 and 12-12
peaks, three partner platforms and 2,000 Mini Shop merchants that start clearly weaker than
the partners and improve over months. Conversion effects are additive shifts on the
log-odds of click and of order-given-click; order values are multiplicative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from allocator.config import GroupName, StrictModel, load_yaml, parse_config
from allocator.errors import ConfigError
from allocator.registry import MINI_SHOP
from allocator.scenario.world.defaults import (
    DEFAULT_DIURNAL,
    default_categories,
    default_intent,
    default_mini_shop_rates,
    default_partners_data,
    default_peaks_data,
)

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
OpenProbability = Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)]
CategoryName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]

_SUM_TOL = 1e-6


def _check_distribution(name: str, probs: tuple[float, ...] | list[float]) -> None:
    total = math.fsum(probs)
    if abs(total - 1.0) > _SUM_TOL:
        raise ValueError(f"{name} probabilities sum to {total:.6g}, expected 1")


class CategoryRates(StrictModel):
    """An average destination's rates in one category (before context effects)."""

    click: OpenProbability
    order: OpenProbability
    order_value: PositiveFloat


class ContextEffects(StrictModel):
    """How the user's context shifts a destination's conversion and basket.

    ``tier_lift`` (3), ``age_lift`` (4) and ``referral_lift`` add to the log-odds of both
    click and order-given-click; ``tier_value`` (3) multiplies the order value.
    """

    tier_lift: tuple[FiniteFloat, FiniteFloat, FiniteFloat] = (0.0, 0.0, 0.0)
    age_lift: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] = (0.0, 0.0, 0.0, 0.0)
    referral_lift: FiniteFloat = 0.0
    tier_value: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (1.0, 1.0, 1.0)


class DriftConfig(StrictModel):
    """A partner's conversion drift: ``slope·days/30 + amplitude·sin(2π(days-phase)/period)``
    added to the log-odds of click and order (days since the start)."""

    slope_per_30d: FiniteFloat = 0.0
    amplitude: NonNegFloat = 0.0
    period_days: PositiveFloat = 30.0
    phase_days: FiniteFloat = 0.0


class PartnerConfig(StrictModel):
    """A partner platform: its own group, eligible on most impressions."""

    id: GroupName
    take_rate: Probability
    eligibility: Probability = 0.99
    rates: dict[CategoryName, CategoryRates]
    effects: ContextEffects = ContextEffects()
    drift: DriftConfig = DriftConfig()


class ImprovementConfig(StrictModel):
    """Mini Shop experience curve: the log-odds lift moves from ``start_lift`` to
    ``end_lift`` along ``1 - 2^(-days/half_time_days)``."""

    start_lift: FiniteFloat = -1.6
    end_lift: FiniteFloat = -0.5
    half_time_days: PositiveFloat = 35.0


class MiniShopConfig(StrictModel):
    """The app's own merchants (group ``mini_shop``).

    Each merchant sells one category (a second one with ``second_category``), has a hidden
    quality (log-odds shift, sd ``quality_sd``) and a hidden order-value level (lognormal,
    mean 1, sd ``value_sd`` of the log). A share ``initial_share`` is live at the start,
    the rest arrive uniformly over the period. Newcomers pay ``newcomer_lift``, decaying as
    ``1/(1 + age/newcomer_half_time_days)``. Observable features are a star rating and a
    price level, both noisy views of the hidden values.
    """

    n_merchants: Annotated[int, Field(ge=1, le=1_000_000)] = 2000
    take_rate: Probability = 0.05
    strategic_weight: NonNegFloat = 0.03
    k: Annotated[int, Field(ge=1, le=1000)] = 20
    retrieval: Literal["uniform", "popularity"] = "uniform"
    popularity_sd: NonNegFloat = 0.5
    popularity_quality_corr: Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)] = 0.5
    initial_share: Probability = 0.3
    second_category: Probability = 0.3
    rates: dict[CategoryName, CategoryRates] = Field(
        default_factory=lambda: {
            c: CategoryRates.model_validate(r) for c, r in default_mini_shop_rates().items()
        }
    )
    effects: ContextEffects = ContextEffects(
        tier_lift=(0.15, 0.05, -0.15), age_lift=(-0.15, 0.0, 0.1, 0.2), referral_lift=0.5
    )
    quality_sd: NonNegFloat = 0.35
    value_sd: NonNegFloat = 0.3
    improvement: ImprovementConfig = ImprovementConfig()
    newcomer_lift: Annotated[float, Field(le=0.0, allow_inf_nan=False)] = -0.5
    newcomer_half_time_days: PositiveFloat = 14.0
    rating_noise: NonNegFloat = 0.5
    price_noise: NonNegFloat = 0.2


class PeakConfig(StrictModel):
    """A seasonal peak over local dates ``start``..``end`` (inclusive).

    The day's traffic is multiplied by ``1 + boost``, the boost interpolating linearly from
    ``boost_first`` to ``boost_last`` over the window; ``intent_tilt`` multiplies the
    category-intent probabilities (renormalised). Overlapping peaks add boosts and
    multiply tilts.
    """

    name: Annotated[str, Field(min_length=1, max_length=64)]
    start: date
    end: date
    boost_first: NonNegFloat
    boost_last: NonNegFloat
    intent_tilt: dict[CategoryName, PositiveFloat] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> PeakConfig:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self


class TrafficConfig(StrictModel):
    """When impressions happen: ``diurnal`` (24 relative weights by local hour), local time
    ``utc_offset_hours`` from UTC, and the seasonal ``peaks``."""

    diurnal: tuple[NonNegFloat, ...] = DEFAULT_DIURNAL
    utc_offset_hours: Annotated[int, Field(ge=-12, le=14)] = 8
    peaks: list[PeakConfig] = Field(
        default_factory=lambda: [PeakConfig.model_validate(p) for p in default_peaks_data()]
    )

    @model_validator(mode="after")
    def _profile(self) -> TrafficConfig:
        if len(self.diurnal) != 24:
            raise ValueError(f"diurnal has {len(self.diurnal)} values, expected 24")
        if max(self.diurnal) <= 0.0:
            raise ValueError("diurnal is all zero: no traffic at any hour")
        return self


class UsersConfig(StrictModel):
    """User-context probabilities: city tier (3), age band (4), referral flag, intent."""

    city_tier: tuple[Probability, Probability, Probability] = (0.3, 0.4, 0.3)
    age_band: tuple[Probability, Probability, Probability, Probability] = (0.2, 0.32, 0.3, 0.18)
    referral: Probability = 0.12
    intent: dict[CategoryName, Probability] = Field(default_factory=default_intent)

    @model_validator(mode="after")
    def _sums(self) -> UsersConfig:
        _check_distribution("city_tier", self.city_tier)
        _check_distribution("age_band", self.age_band)
        _check_distribution("intent", list(self.intent.values()))
        return self


class WorldConfig(StrictModel):
    """The whole simulated world; ``start`` must be a UTC midnight."""

    start: datetime = datetime(2025, 10, 1, tzinfo=UTC)
    days: Annotated[int, Field(ge=1, le=3660)] = 120
    categories: tuple[CategoryName, ...] = Field(default_factory=default_categories)
    traffic: TrafficConfig = TrafficConfig()
    users: UsersConfig = UsersConfig()
    partners: list[PartnerConfig] = Field(
        default_factory=lambda: [PartnerConfig.model_validate(p) for p in default_partners_data()]
    )
    mini_shop: MiniShopConfig = MiniShopConfig()
    gmv_sigma: Annotated[float, Field(ge=0.0, le=3.0, allow_inf_nan=False)] = 0.6

    @model_validator(mode="after")
    def _consistent(self) -> WorldConfig:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError(f"start ({self.start}) must carry a timezone (e.g. ...Z)")
        s = self.start.astimezone(UTC)
        if (s.hour, s.minute, s.second, s.microsecond) != (0, 0, 0, 0):
            raise ValueError(f"start ({self.start}) must be a UTC midnight")
        cats = self.categories
        if len(cats) == 0 or len(set(cats)) != len(cats):
            raise ValueError(f"categories must be non-empty and unique (got {list(cats)})")
        _same_keys("users.intent", self.users.intent, cats)
        _same_keys("mini_shop.rates", self.mini_shop.rates, cats)
        if not self.partners:
            raise ValueError("partners is empty: at least one partner platform is required")
        seen: set[str] = set()
        for i, p in enumerate(self.partners):
            if p.id == MINI_SHOP or p.id in seen:
                why = "is reserved for the Mini Shop" if p.id == MINI_SHOP else "is not unique"
                raise ValueError(f"partners.{i}.id {p.id!r} {why}")
            seen.add(p.id)
            _same_keys(f"partners.{i}.rates", p.rates, cats)
        for i, peak in enumerate(self.traffic.peaks):
            extra = sorted(set(peak.intent_tilt) - set(cats))
            if extra:
                raise ValueError(
                    f"traffic.peaks.{i}.intent_tilt has unknown categories {extra}; "
                    f"expected some of {list(cats)}"
                )
        return self


def _same_keys(field: str, table: Mapping[str, object], cats: tuple[str, ...]) -> None:
    missing = [c for c in cats if c not in table]
    extra = sorted(set(table) - set(cats))
    if missing or extra:
        raise ValueError(
            f"{field} must have exactly the categories {list(cats)} "
            f"(missing {missing}, unknown {extra})"
        )


def load_world_config(path: str | Path) -> WorldConfig:
    """Read the ``world:`` section of a YAML scenario file as a :class:`WorldConfig`."""
    data = load_yaml(path)
    if not isinstance(data, dict) or "world" not in data:
        raise ConfigError(f"config file {path} has no top-level 'world:' section")
    if data["world"] is None:
        return WorldConfig()
    cfg: WorldConfig = parse_config(WorldConfig, data["world"], f"{path} (world)")
    return cfg
