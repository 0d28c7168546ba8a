"""Prototype (not merged): the factored policy with only the crosses the world has (issue 14).

``factored_value`` learns a weight for every (arm feature × context column) pair: 12 × 15 =
180 per factor on the bundled world. The world's rates need far fewer. A partner's and the
Mini Shop's rates move with every context column (the group one-hots × everything), a
category's rates with the user's intent (``sells_<c>`` × ``intent_*``), and a merchant's
rating and price level act the same in every context (× ``bias`` only). This prototype keeps
those pairs and pins every other weight at 0: its prior precision is multiplied by
``SCALE`` (1e6) through ``FactoredValuePolicy.prior_diag``, the one place the three factors'
priors come from (refresh, the hybrid click's marginal and the snapshots all read it).

    PYTHONPATH=. python experiments/static_world/crosses.py \
        --config experiments/static_world/config.yaml --world-seeds 7 --seeds 1 2 3 \
        --strategies value_ts_protected --out crosses.jsonl

takes ``experiments/oracle_gap/run.py``'s arguments and runs it with the prototype on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from allocator.policies.factored import FactoredValuePolicy
from allocator.scenario.world import World, WorldConfig
from experiments.oracle_gap import run as oracle_gap

SCALE = 1e6
ARM_FEATURES = (
    "group_taobao", "group_douyin", "group_pinduoduo", "group_mini_shop", "sells_apparel",
    "sells_beauty", "sells_electronics", "sells_grocery", "sells_home", "sells_food_delivery",
    "rating", "price_level",
)  # fmt: skip
CONTEXT = (
    "bias", "tier_1", "tier_2", "tier_3", "age_18_24", "age_25_34", "age_35_49", "age_50_plus",
    "intent_apparel", "intent_beauty", "intent_electronics", "intent_grocery", "intent_home",
    "intent_food_delivery", "referral",
)  # fmt: skip


def kept_pairs() -> np.ndarray:
    """(arm feature, context column) pairs the prototype keeps, as a boolean matrix."""
    keep = np.zeros((len(ARM_FEATURES), len(CONTEXT)), dtype=bool)
    for i, a in enumerate(ARM_FEATURES):
        for j, c in enumerate(CONTEXT):
            keep[i, j] = (
                a.startswith("group_")
                or c == "bias"
                or (a.startswith("sells_") and c.startswith("intent_"))
            )
    return keep


def restrict_crosses(arm_names: tuple[str, ...], context_names: tuple[str, ...]) -> None:
    """Pin the weights of every pair outside :func:`kept_pairs` (for the whole process).

    The names are the world's; they must be the bundled world's, in its order."""
    if arm_names != ARM_FEATURES or context_names != CONTEXT:
        raise SystemExit("crosses.py knows the bundled world's feature names only")
    mult = np.where(kept_pairs(), 1.0, SCALE).ravel()
    original: Callable[..., np.ndarray] = FactoredValuePolicy.prior_diag

    def prior_diag(self: FactoredValuePolicy, prefix: str = "") -> np.ndarray:
        diag = original(self, prefix)
        if diag.shape != mult.shape:  # e.g. the --arm-intercept column
            raise SystemExit(f"crosses.py expects {mult.size} weights, not {diag.size}")
        return diag * mult

    FactoredValuePolicy.prior_diag = prior_diag  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    bundled = World(WorldConfig(), seed=0)  # the names do not depend on the seed
    restrict_crosses(bundled.arm_feature_names, bundled.context_names)
    return oracle_gap.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
