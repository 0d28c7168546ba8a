"""Numbers of the bundled WeChat shopping-entry scenario (the :class:`WorldConfig` defaults).

Rates are an average destination's click rate, order-given-click rate and mean order value
per category. Partners convert well from day one; the Mini Shop's mature rates are a bit
below theirs, and it starts far below them (see ``ImprovementConfig``), so its story is
"weak at launch, strong merchants win their categories after a few months".
"""

from __future__ import annotations

from typing import Any

CATEGORIES: tuple[str, ...] = (
    "apparel",
    "beauty",
    "electronics",
    "grocery",
    "home",
    "food_delivery",
)

# Relative impressions by local hour (China): quiet nights, lunch and evening peaks.
DEFAULT_DIURNAL: tuple[float, ...] = (
    0.55, 0.35, 0.22, 0.15, 0.12, 0.15, 0.30, 0.60, 0.90, 1.00, 1.05, 1.15,
    1.35, 1.20, 1.00, 0.95, 1.00, 1.05, 1.15, 1.35, 1.60, 1.75, 1.55, 1.00,
)  # fmt: skip


def _rates(click: list[float], order: list[float], value: list[float]) -> dict[str, Any]:
    return {
        c: {"click": k, "order": o, "order_value": v}
        for c, k, o, v in zip(CATEGORIES, click, order, value, strict=True)
    }


def default_categories() -> tuple[str, ...]:
    return CATEGORIES


def default_intent() -> dict[str, float]:
    return dict(zip(CATEGORIES, (0.22, 0.13, 0.12, 0.20, 0.13, 0.20), strict=True))


def default_mini_shop_rates() -> dict[str, Any]:
    return _rates(
        [0.11, 0.12, 0.06, 0.10, 0.09, 0.09],
        [0.22, 0.26, 0.10, 0.30, 0.20, 0.26],
        [150.0, 130.0, 380.0, 70.0, 170.0, 55.0],
    )


def default_partners_data() -> list[dict[str, Any]]:
    """Taobao: broad, best in big cities; Douyin: young users, impulse; Pinduoduo: small
    cities, low prices. Take rates are revenue shares on GMV."""
    return [
        {
            "id": "taobao",
            "take_rate": 0.03,
            "eligibility": 0.99,
            "rates": _rates(
                [0.12, 0.11, 0.10, 0.07, 0.10, 0.05],
                [0.22, 0.25, 0.15, 0.30, 0.20, 0.20],
                [180.0, 150.0, 450.0, 80.0, 220.0, 60.0],
            ),
            "effects": {
                "tier_lift": (0.2, 0.05, -0.25),
                "age_lift": (-0.05, 0.05, 0.05, -0.1),
                "tier_value": (1.15, 1.0, 0.85),
            },
            "drift": {"slope_per_30d": -0.02},
        },
        {
            "id": "douyin",
            "take_rate": 0.04,
            "eligibility": 0.98,
            "rates": _rates(
                [0.15, 0.16, 0.09, 0.08, 0.10, 0.10],
                [0.18, 0.22, 0.12, 0.25, 0.16, 0.28],
                [140.0, 120.0, 350.0, 70.0, 160.0, 55.0],
            ),
            "effects": {
                "tier_lift": (0.0, 0.05, 0.0),
                "age_lift": (0.35, 0.15, -0.15, -0.45),
                "referral_lift": -0.1,
            },
            "drift": {"amplitude": 0.08, "period_days": 28.0},
        },
        {
            "id": "pinduoduo",
            "take_rate": 0.03,
            "eligibility": 0.99,
            "rates": _rates(
                [0.10, 0.08, 0.09, 0.14, 0.11, 0.06],
                [0.28, 0.24, 0.18, 0.38, 0.26, 0.22],
                [90.0, 80.0, 300.0, 55.0, 120.0, 45.0],
            ),
            "effects": {
                "tier_lift": (-0.35, 0.0, 0.4),
                "age_lift": (-0.1, 0.0, 0.05, 0.1),
                "tier_value": (0.9, 1.0, 1.05),
            },
            "drift": {"slope_per_30d": 0.03},
        },
    ]


def default_peaks_data() -> list[dict[str, Any]]:
    """Double-11 (presale Nov 1-10, the day itself far stronger) and a 12-12 bump."""
    d11_tilt = {"apparel": 1.4, "electronics": 1.5, "beauty": 1.3}
    return [
        {
            "name": "double11_presale",
            "start": "2025-11-01",
            "end": "2025-11-10",
            "boost_first": 0.4,
            "boost_last": 1.0,
            "intent_tilt": d11_tilt,
        },
        {
            "name": "double11",
            "start": "2025-11-11",
            "end": "2025-11-11",
            "boost_first": 3.0,
            "boost_last": 3.0,
            "intent_tilt": {"apparel": 1.6, "electronics": 1.7, "beauty": 1.4},
        },
        {
            "name": "double12",
            "start": "2025-12-10",
            "end": "2025-12-12",
            "boost_first": 0.2,
            "boost_last": 0.8,
            "intent_tilt": {"apparel": 1.2, "home": 1.2},
        },
    ]
