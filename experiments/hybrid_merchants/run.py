"""Hybrid merchant model vs today's recommended policy on the scenario, several worlds.

Runs every cell of ``config.yaml`` (or ``--config``: another experiment's scenario, e.g.
``experiments/value_factored/config.yaml``; strategies × seeds) for each world seed, optionally on
a world variant (more merchants, a wider hidden-quality spread), in a process pool, and
prints per strategy and world: value/1k, its share of the oracle on the same traffic,
regret over the first 14 simulated days and the regret slope (per day) over the last 30.
The oracle's value is the strategy's value plus its regret (same impressions, same truth).

    python experiments/hybrid_merchants/run.py --world-seeds 7 11 --impressions 200000
    python experiments/hybrid_merchants/run.py --world-seeds 7 --merchants 5000 \
        --quality-sd 0.7
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from allocator.config import load_yaml, parse_config
from allocator.scenario.build import grid_cells
from allocator.scenario.config import ScenarioConfig, set_dotted
from allocator.scenario.simulate import Shared, run_cell
from allocator.scenario.world import World

HERE = Path(__file__).resolve().parent

_SHARED: Shared | None = None


def _load(args: argparse.Namespace, world_seed: int) -> ScenarioConfig:
    data: dict[str, Any] = load_yaml(args.config)
    data = set_dotted(data, "experiment.world_seed", world_seed)
    data = set_dotted(data, "experiment.seeds", list(args.seeds))
    if args.merchants:
        data = set_dotted(data, "world.mini_shop.n_merchants", args.merchants)
    if args.quality_sd:
        data = set_dotted(data, "world.mini_shop.quality_sd", args.quality_sd)
    cfg: ScenarioConfig = parse_config(ScenarioConfig, data, str(args.config))
    return cfg


def _init(shared: Shared) -> None:
    global _SHARED
    _SHARED = shared


def _run(task: Any) -> tuple[str, int, dict[str, float], list[float], float]:
    assert _SHARED is not None
    res = run_cell(_SHARED, task)
    _, cum = res.curves["curve.cum_regret"]
    return task.strategy, task.seed, res.metrics, cum.tolist(), res.seconds


def _summary(metrics: dict[str, float], cum: np.ndarray, days: float) -> dict[str, float]:
    per_bin = days / cum.shape[0]
    first = round(14 / per_bin)
    last = round(30 / per_bin)
    v, reg = metrics["value_per_1k"], metrics["regret_per_1k"]
    return {
        "value_per_1k": v,
        "oracle_share": v / (v + reg),
        "regret_14d": float(cum[first - 1]),
        "slope_last30d": float((cum[-1] - cum[-1 - last]) / (last * per_bin)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        type=Path,
        default=HERE / "config.yaml",
        help="the scenario (another experiment's config.yaml reuses this runner)",
    )
    p.add_argument("--world-seeds", type=int, nargs="+", default=[7, 11])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--impressions", type=int, default=200_000)
    p.add_argument("--merchants", type=int, default=0)
    p.add_argument("--quality-sd", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--strategies", nargs="+", default=None, help="run only these")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON lines")
    args = p.parse_args(argv)
    rows = []
    for ws in args.world_seeds:
        scenario = _load(args, ws)
        world = World(scenario.world, seed=ws)
        days = (world.end_s - world.start_s) / 86400.0
        cells = [
            c for c in grid_cells(scenario, world, args.impressions)
            if c.strategy != "oracle" and (args.strategies is None or c.strategy in args.strategies)
        ]  # fmt: skip
        with ProcessPoolExecutor(args.workers, initializer=_init,
                                 initargs=(Shared(world, scenario),)) as pool:  # fmt: skip
            for name, seed, metrics, cum, secs in pool.map(_run, cells):
                row = {"world_seed": ws, "strategy": name, "seed": seed, "seconds": secs,
                       **_summary(metrics, np.asarray(cum), days)}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print(f"\n{'world':>5} {'strategy':<26} {'value/1k':>9} {'oracle %':>9} "
          f"{'regret 14d':>11} {'slope/day':>10}  (mean over seeds {args.seeds})")  # fmt: skip
    keys = sorted({(r["world_seed"], r["strategy"]) for r in rows})
    for ws, name in keys:
        sel = [r for r in rows if r["world_seed"] == ws and r["strategy"] == name]
        m = {k: float(np.mean([r[k] for r in sel])) for k in sel[0] if k not in ("strategy",)}
        print(f"{ws:>5} {name:<26} {m['value_per_1k']:>9.1f} {100 * m['oracle_share']:>8.1f}% "
              f"{m['regret_14d']:>11.1f} {m['slope_last30d']:>10.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
