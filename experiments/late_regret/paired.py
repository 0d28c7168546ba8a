"""Paired comparison of two strategies over cells and policy-seed replicates.

    PYTHONPATH=. python experiments/late_regret/paired.py late.jsonl reps.jsonl \
        --a value_ts_protected --b intercept_conv

Rows pair when they share the world, the traffic seed and the policy seed (a row without
``policy_seed`` ran with the traffic seed's own, the simulator's default). Replicates of a
cell share its impressions, so they are averaged within the cell first; the interval is a
Student t interval (95 %) over the cells' mean differences, the cell being the independent
unit. Printed: per cell, B − A in points of the oracle's value and the relative change of
the regret over the first 14 days, each replicate's; then the means over cells with their
intervals, and the spread of each one's share over its replicates (the policy's own noise).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from allocator.scenario.report import t_half_width


def interval(x: np.ndarray) -> str:
    m = float(x.mean())
    if x.size < 2:
        return f"{m:+.2f} (one cell)"
    h = t_half_width(x)
    return f"{m:+.2f} [{m - h:+.2f}, {m + h:+.2f}]"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("rows", nargs="+", type=Path)
    p.add_argument("--a", default="value_ts_protected")
    p.add_argument("--b", default="intercept_conv")
    args = p.parse_args(argv)
    runs: dict[tuple[int, int, int], dict[str, dict]] = defaultdict(dict)
    for path in args.rows:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["strategy"] in (args.a, args.b):
                key = (r["world_seed"], r["seed"], r.get("policy_seed", r["seed"]))
                runs[key][r["strategy"]] = r
    cells: dict[tuple[int, int], list[tuple[float, float, float, float]]] = defaultdict(list)
    for (ws, s, _), pair in sorted(runs.items()):
        if len(pair) == 2:
            a, b = pair[args.a], pair[args.b]
            cells[(ws, s)].append((
                100.0 * (b["oracle_share"] - a["oracle_share"]),
                100.0 * (b["regret_14d"] / a["regret_14d"] - 1.0),
                100.0 * a["oracle_share"],
                100.0 * b["oracle_share"],
            ))  # fmt: skip
    print(f"B = {args.b}, A = {args.a}: per cell, each replicate's B − A (points of the "
          "oracle's value; early regret change %)")  # fmt: skip
    share, early, spread_a, spread_b = [], [], [], []
    for (ws, s), reps in sorted(cells.items()):
        d = np.array(reps)
        print(f"  world {ws} seed {s}: " + ", ".join(f"{x:+.1f} ({e:+.0f} %)" for x, e, *_ in reps))
        share.append(d[:, 0].mean())
        early.append(d[:, 1].mean())
        if d.shape[0] > 1:
            spread_a.append(d[:, 2].std(ddof=1))
            spread_b.append(d[:, 3].std(ddof=1))
    n_pairs = sum(len(r) for r in cells.values())
    print(f"{len(cells)} cells, {n_pairs} pairs; means over cells, 95 % t interval:")
    print(f"  share of the oracle, B − A (points): {interval(np.array(share))}")
    print(f"  regret over the first 14 days, B / A − 1 (%): {interval(np.array(early))}")
    print(f"  cells where B's mean share is higher: {sum(x > 0 for x in share)} of {len(share)}")
    if spread_a:
        print(
            f"  share over the replicates of a cell, sd (points; mean over {len(spread_a)} cells):"
            f" A {np.mean(spread_a):.2f}, B {np.mean(spread_b):.2f}"
        )


if __name__ == "__main__":
    main()
