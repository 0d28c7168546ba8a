"""Partner-floor compliance measured from what a strategy served, whatever the strategy.

The constraint layer keeps its own books, but only constrained strategies have one; to put
every strategy in the same table, a floor is re-measured here from the served groups: over
the floor's in-scope impressions (scope attributes match, the schedule is active and, for
``on_missing: skip``, the target group was a candidate), every sliding window of W
consecutive impressions compares the share served to the target with the scheduled share.
The worst window's slack (served − target, as a share of W) is the compliance figure:
≥ 0 means the floor held on every window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allocator.constraints import ConstraintSet
from allocator.constraints.config import GroupTarget, Schedule
from allocator.scenario.kernels import has_group


@dataclass(frozen=True)
class FloorTrack:
    name: str
    group: int
    categories: frozenset[int] | None
    tiers: frozenset[int] | None
    schedule: Schedule
    skip_missing: bool
    window: int

    def schedule_at(self, t: np.ndarray) -> np.ndarray:
        return self.schedule.values_at(t)

    def measure(
        self, t: np.ndarray, served_group: np.ndarray, present: np.ndarray,
        category: np.ndarray, tier: np.ndarray,
    ) -> dict[str, float]:  # fmt: skip
        target = self.schedule_at(t)
        scope = target > 0.0
        if self.categories is not None:
            scope &= np.isin(category, list(self.categories))
        if self.tiers is not None:
            scope &= np.isin(tier, list(self.tiers))
        if self.skip_missing:
            scope &= has_group(present, self.group)
        served = (served_group[scope] == self.group).astype(np.float64)
        r = target[scope]
        key = f"floor.{self.name}"
        out = {f"{key}.impressions": float(served.shape[0])}
        if served.shape[0] == 0:
            return out
        out[f"{key}.served_share"] = float(served.mean())
        out[f"{key}.target_share"] = float(r.mean())
        w = min(self.window, served.shape[0])
        c = np.concatenate([[0.0], np.cumsum(served - r)])
        out[f"{key}.worst_slack"] = float((c[w:] - c[:-w]).min() / w)
        return out


def floor_tracks(scenario: Any, spec: dict[str, Any], arms: Any, world: Any) -> list[FloorTrack]:
    """Group floors of the strategy's own contracts, else of the scenario's first set."""
    name = spec.get("contracts") or next(iter(scenario.contracts), None)
    if name is None:
        return []
    cset: ConstraintSet = scenario.contracts[name]
    out = []
    for c in cset.constraints:
        if c.kind != "floor" or not isinstance(c.target, GroupTarget):
            continue
        if c.target.group not in arms.group_names:
            continue
        cats: frozenset[int] | None = None
        tiers: frozenset[int] | None = None
        if set(c.scope) - {"category", "city_tier"}:
            # the simulator sends no other attribute: the layer never applies this floor
            cats = frozenset()
        elif "category" in c.scope:
            cats = frozenset(arms.categories.index(v) for v in c.scope["category"]
                             if v in arms.categories)  # fmt: skip
        if "city_tier" in c.scope:
            tiers = frozenset(arms.city_tiers.index(v) for v in c.scope["city_tier"]
                              if v in arms.city_tiers)  # fmt: skip
        out.append(
            FloorTrack(
                c.name,
                arms.group_names.index(c.target.group),
                cats,
                tiers,
                c.schedule,
                c.on_missing == "skip",
                cset.window,
            )
        )
    return out
