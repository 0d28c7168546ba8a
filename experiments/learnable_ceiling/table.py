"""The learnable ceiling's rows as a table: per world variant, scale and learner, the share of
the oracle (mean and range over cells), regret over the first 14 days, regret slope over the
last 30, and the Mini Shop's share of the period's last tenth (the oracle's beside it).

    python experiments/learnable_ceiling/table.py experiments/learnable_ceiling/rows.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# how the learner knows the Mini Shop's time course, by the row's ``static_time``
TIME_COURSE = {False: "known", True: "mean only", "improvement": "improvement: mean only",
               "newcomer": "newcomer shift: mean only"}  # fmt: skip


def main(paths: list[str]) -> int:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        time_course = TIME_COURSE[r.get("static_time", False)]
        key = (r["merchants"], r["quality_sd"], r["impressions"], time_course,
               ",".join(r.get("ignore", [])), r["learner"], r.get("ts_scale", 1.0))  # fmt: skip
        groups.setdefault(key, []).append(r)
    print(
        "| world | impressions | time course | learner | cells | share of the oracle, mean "
        "(min–max) | regret, first 14 days | slope, last 30 days (/day) | Mini Shop at the "
        "end (oracle) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(groups):
        merchants, sd, n, static, ignore, learner, scale = key
        sel = groups[key]
        share = np.array([100 * r["oracle_share"] for r in sel])
        name = learner if learner != "ts" else f"ts {scale:g}"
        if ignore:
            name += f", ignoring {ignore}"
        world = f"{merchants:,} merchants, sd {sd:g}"
        cells = ", ".join(f"{r['world_seed']}/{r['seed']}" for r in sel)
        print(
            f"| {world} | {n:,} | {static} | {name} | {cells} | "
            f"{share.mean():.1f} ({share.min():.1f}–{share.max():.1f}) | "
            f"{np.mean([r['regret_14d'] for r in sel]):,.0f} | "
            f"{np.mean([r['slope_last30d'] for r in sel]):.1f} | "
            f"{100 * np.mean([r['mini_end'] for r in sel]):.1f} % "
            f"({100 * np.mean([r['oracle_mini_end'] for r in sel]):.1f} %) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
