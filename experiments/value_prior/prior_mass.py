"""The Mini Shop's share of the decision mass at the prior (no outcome learned yet).

On the first requests of a cell (default: 2,000 of world 7, traffic seed 1), the factored
value model with the hybrid click of ``config.yaml`` decides under each value prior (and,
``experiments/factor_prior``, the click and order priors) and each rule; the Mini Shop's mass
is the sum of its candidates' exact probabilities. It separates what the priors do at the
very start from what the groups' take rates do.

    PYTHONPATH=. python experiments/value_prior/prior_mass.py --world-seed 11
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from allocator.config import FactoredValueConfig
from allocator.policies import make_policy
from allocator.registry import MINI_SHOP, ArmRegistry
from allocator.scenario.build import scenario_arms, scenario_objective
from allocator.scenario.world import World
from experiments.oracle_gap.run import load

HERE = Path(__file__).resolve().parent
PRIORS = {
    "flat, precision 1 (clicks_hybrid_0.35)": {},
    "flat, precision 4 (value_tight)": {"value_prior_precision": 4.0},
    "balanced, precision 4 (value_balanced)": {
        "value_prior": "balanced", "value_prior_precision": 4.0,
    },
    "+ click, order balanced (factor_balanced_half)": {
        "value_prior": "balanced", "value_prior_precision": 4.0, "factor_prior": "balanced",
    },
    "+ P(order | click) at 0.05 (factor_balanced)": {
        "value_prior": "balanced", "value_prior_precision": 4.0, "factor_prior": "balanced",
        "typical_conversion": 0.05,
    },
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--world-seed", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--requests", type=int, default=2000)
    args = p.parse_args()
    scenario = load(HERE / "config.yaml", args.world_seed, [args.seed], 0, 0.0)
    world = World(scenario.world, seed=args.world_seed)
    arms = scenario_arms(world)
    chunk = next(iter(world.stream(args.requests, seed=args.seed)))
    n = min(args.requests, chunk.timestamps.shape[0])
    ptr = chunk.cand_ptr[: n + 1]
    idx = chunk.cand_idx[: ptr[-1]]
    xs = chunk.contexts[:n]
    mini = np.array([g == MINI_SHOP for g in arms.groups])[idx]
    print(f"{n} requests, mean ‖x‖² {(xs**2).sum(1).mean():.2f}, "
          f"{100 * mini.mean():.0f} % of the candidates Mini Shop merchants")  # fmt: skip
    for name, prior in PRIORS.items():
        for rule in ("thompson", "greedy"):
            reg = ArmRegistry(capacity=len(arms.ids))
            for g in arms.group_names:  # arms are grouped in this order
                reg.add([i for i, gg in zip(arms.ids, arms.groups, strict=True) if gg == g], g)
            cfg = FactoredValueConfig(
                n_context_features=arms.n_context, n_arm_features=arms.features.shape[1],
                objective=scenario_objective(scenario, world), typical_order_value=150,
                value_log_sd=1.0, exploration_scale=0.35, half_life=200_000, rule=rule,
                click_model="hybrid", offset_sd=0.35, max_candidates=64, **prior,
            )  # fmt: skip
            pol = make_policy(cfg, reg, seed=1, arm_features=arms.features)
            out = pol.decide_batch(ptr, idx, xs)
            share = out.probabilities[mini].sum() / n
            print(f"{name:48s} {rule:9s} Mini Shop mass {100 * share:.1f} %")


if __name__ == "__main__":
    main()
