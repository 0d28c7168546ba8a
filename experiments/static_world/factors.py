"""Which of the factored policy's three factors costs value at the end of a run (issue 14).

Runs one cell of a ``factored_value`` strategy (the same impressions, outcome draws and
decisions as ``experiments/oracle_gap/run.py``'s cell), then reads its posterior means at
the end and scores every candidate of the period's last tenth:

- **calibration**: per group, the mean and sd of (model − truth) of the click logit, the
  order logit and the log order value (the model's posterior mean; the truth's order value
  is ``E[GMV | order]``, so a calibrated log-normal model sits ``σ²/2`` = 0.18 below it at
  the world's ``gmv_sigma`` 0.6);
- **swap table**: the value lost against the oracle over the last tenth when every
  impression is served greedily on the posterior-mean value, with each factor taken from
  the model, from the truth, or from the model less its mean error in the candidate's group
  ("calibrated": a group-level bias removed).

The greedy rule on the end posterior is not the policy (which samples and is constrained);
the table says which factor's errors rank candidates wrongly, and whether a level (the
group bias) or the spread within a group is at fault.

    PYTHONPATH=. python experiments/static_world/factors.py \
        --config experiments/static_world/config.yaml --world-seed 7 --seed 1 \
        [--strategy value_ts_protected_crosses]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from allocator.scenario.build import build_strategy, grid_cells, scenario_arms
from allocator.scenario.config import ScenarioConfig
from allocator.scenario.simulate import value_rates
from allocator.scenario.strategies import ScenarioArms, Tick
from allocator.scenario.world import Chunk, World
from experiments.oracle_gap.run import load

FACTORS = ("click", "order", "value")
SOURCES = ("model", "truth", "calibrated")


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def run_and_read(
    world: World, scenario: ScenarioConfig, strategy: str, seed: int, n: int
) -> tuple[Any, list[Chunk], ScenarioArms, np.ndarray, np.ndarray]:
    """Run the cell; return the policy (refreshed), the chunks of the last tenth, the arms,
    each arm's group code and each group's value rate."""
    arms = scenario_arms(world)
    group_of_arm = np.array([arms.group_names.index(g) for g in arms.groups], dtype=np.int64)
    rates = value_rates(world, arms.group_names)
    cell = next(c for c in grid_cells(scenario, world, n) if c.strategy == strategy)
    st = build_strategy(cell.spec, scenario, world, arms, seed)
    batch = scenario.experiment.feedback_batch
    end_start = world.end_s - 0.1 * (world.end_s - world.start_s)
    tail = []
    for chunk in world.stream(n, seed=seed):
        cand_group = group_of_arm[chunk.cand_idx]
        value = chunk.p_click * chunk.p_order * chunk.order_value * rates[cand_group]
        for lo in range(0, chunk.n, batch):
            hi = min(chunk.n, lo + batch)
            tick = Tick.of(chunk, lo, hi, cand_group, value)
            flat = tick.cand_ptr[:-1] + st.decide(tick).positions
            outcomes = world.draw_outcomes(chunk.rows(lo, hi), flat, seed)
            st.learn(tick, tick.cand_idx[flat], outcomes)
        if chunk.timestamps[-1] >= end_start:
            keep = chunk.timestamps >= end_start
            tail.append(chunk.rows(int(np.argmax(keep)), chunk.n))
    policy = st.policy  # type: ignore[attr-defined]  # a PolicyStrategy
    policy.refresh()
    return policy, tail, arms, group_of_arm, rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--world-seed", type=int, default=7)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--strategy", default="value_ts_protected")
    p.add_argument("--impressions", type=int, default=200_000)
    args = p.parse_args(argv)
    scenario = load(args.config, args.world_seed, [args.seed], 0, 0.0)
    world = World(scenario.world, seed=args.world_seed)
    policy, tail, arms, group_of_arm, rates = run_and_read(
        world, scenario, args.strategy, args.seed, args.impressions
    )
    feats = policy.state.features
    means = [policy.factor_posterior(prefix)[0] for prefix in ("", "order_", "value_")]
    offsets = policy.click_offsets()[0]
    noise_var = float(policy.state.noise_var[0])
    order_offset, typical = float(policy._weights[4]), policy.config.typical_order_value
    n_groups = len(arms.group_names)
    err: dict[str, list[np.ndarray]] = {f: [] for f in FACTORS}
    groups: list[np.ndarray] = []
    lost = dict.fromkeys(itertools.product(SOURCES, repeat=3), 0.0)
    oracle = 0.0
    for chunk in tail:
        rows = np.repeat(np.arange(chunk.n), np.diff(chunk.cand_ptr))
        a = chunk.cand_idx
        phi = (feats[a][:, :, None] * chunk.contexts[rows][:, None, :]).reshape(a.size, -1)
        model = {
            "click": phi @ means[0] + (offsets[a] if offsets.size else 0.0),
            "order": phi @ means[1] + order_offset,
            "value": phi @ means[2] + np.log(typical),
        }
        truth = {
            "click": _logit(chunk.p_click), "order": _logit(chunk.p_order),
            "value": np.log(chunk.order_value),
        }  # fmt: skip
        g = group_of_arm[a]
        calibrated = {}
        for f in FACTORS:
            e = model[f] - truth[f]
            err[f].append(e)
            bias = np.bincount(g, e, n_groups) / np.maximum(np.bincount(g, None, n_groups), 1)
            calibrated[f] = model[f] - bias[g]
        groups.append(g)
        source = {"model": model, "truth": truth, "calibrated": calibrated}
        true_value = chunk.p_click * chunk.p_order * chunk.order_value * rates[g]
        best = np.maximum.reduceat(true_value, chunk.cand_ptr[:-1])
        oracle += float(best.sum())
        for combo in lost:
            c, o, v = (source[s][f] for s, f in zip(combo, FACTORS, strict=True))
            est = _sigmoid(c) * _sigmoid(o) * np.exp(v + noise_var / 2) * rates[g]
            bounds = zip(chunk.cand_ptr[:-1], chunk.cand_ptr[1:], strict=True)
            pick = [lo + int(np.argmax(est[lo:hi])) for lo, hi in bounds]
            lost[combo] += float((best - true_value[pick]).sum())
    g_all = np.concatenate(groups)
    print(f"{args.config} world {args.world_seed} seed {args.seed} {args.strategy}: the last tenth")
    print("\n| group | candidates | " + " | ".join(f"{f}: mean error (sd)" for f in FACTORS) + " |")
    print("|---|---|---|---|---|")
    for gi, name in enumerate(arms.group_names):
        sel = g_all == gi
        cells = [np.concatenate(err[f])[sel] for f in FACTORS]
        print(f"| {name} | {sel.sum():,} | "
              + " | ".join(f"{e.mean():+.2f} ({e.std():.2f})" for e in cells) + " |")  # fmt: skip
    print("\n| click | order | value | lost against the oracle (greedy on posterior means) |")
    print("|---|---|---|---|")
    for combo, value in sorted(lost.items(), key=lambda kv: kv[1]):
        print(f"| {' | '.join(combo)} | {100 * value / oracle:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
