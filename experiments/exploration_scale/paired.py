"""The pre-registered test: each candidate against the recommended policy, cell by cell.

    PYTHONPATH=. python experiments/exploration_scale/paired.py test.jsonl

A strategy's share of the oracle and regret over the first 14 days on a cell are the means
of its runs there (any policy seeds); the recommended policy's runs are read from
``experiments/late_regret`` (``--reference``). The interval is a 95 % Student t interval
over the cells' differences, the cell being the independent unit (README: the rule).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from allocator.scenario.report import t_half_width
from experiments.late_regret.paired import interval

HERE = Path(__file__).resolve().parent
REFERENCE = [HERE.parent / "late_regret" / f for f in ("late.jsonl", "reps.jsonl", "pseed.jsonl")]


def cell_means(paths: list[Path], strategy: str) -> dict[tuple[int, int], tuple[float, float, int]]:
    """Per (world seed, traffic seed): mean share (points), mean early regret, run count."""
    runs: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for path in paths:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["strategy"] == strategy:
                runs[(r["world_seed"], r["seed"])].append(
                    (100.0 * r["oracle_share"], r["regret_14d"])
                )
    return {k: (*np.mean(v, axis=0), len(v)) for k, v in runs.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("rows", nargs="+", type=Path)
    p.add_argument("--reference", nargs="+", type=Path, default=REFERENCE)
    p.add_argument("--baseline", default="value_ts_protected")
    p.add_argument("--candidates", nargs="+", default=["explore_0.1", "intercept_conv_explore_0.1"])
    args = p.parse_args(argv)
    base = cell_means(args.reference, args.baseline)
    for name in args.candidates:
        cand = cell_means(args.rows, name)
        cells = sorted(set(cand) & set(base))
        if not cells:
            print(f"{name}: no cell in common with {args.baseline}")
            continue
        print(f"{name} − {args.baseline} (runs: candidate / baseline):")
        share, early = [], []
        for c in cells:
            (sc, ec, nc), (sb, eb, nb) = cand[c], base[c]
            share.append(sc - sb)
            early.append(100.0 * (ec / eb - 1.0))
            print(f"  world {c[0]} seed {c[1]}: {sc:.2f} vs {sb:.2f} ({sc - sb:+.2f} points), "
                  f"early regret {100.0 * (ec / eb - 1.0):+.1f} % ({nc} / {nb})")  # fmt: skip
        s, e = np.array(share), np.array(early)
        print(f"  {len(cells)} cells: share {interval(s)} points, higher on {int((s > 0).sum())}; "
              f"early regret {interval(e)} %")  # fmt: skip
        passed = s.mean() - t_half_width(s) > 0 and e.mean() + t_half_width(e) < 0
        print(f"  the rule: {'passes' if passed and len(cells) == 12 else 'does not pass'}")


if __name__ == "__main__":
    main()
