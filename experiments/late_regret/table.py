"""The study's tables (markdown) from the rows ``oracle_gap/run.py`` appended to a file.

    python experiments/late_regret/table.py late.jsonl

Per cell and strategy: value/1k, share of the oracle, regret over the first 14 days, regret
slope over the last 30 days, then the end's regret (the last tenth of the period) split by
the group of each impression's best candidate: a merchant best and another group served
(``missed.mini_shop``), a merchant served but not the best one (``within.mini_shop``), a
partner best and another group served (the partners' ``missed``, summed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MISSED = "regret_end_per_1k.missed."


def main(paths: list[str]) -> None:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]
    rows = [r for r in rows if r["strategy"] != "(references)"]
    print("| world | seed | strategy | value/1k | share of the oracle | regret, first 14 days "
          "| slope, last 30 days (/day) | end regret/1k | merchant best, other group served "
          "| wrong merchant | partner best, other group served |")  # fmt: skip
    print("|---" * 11 + "|")
    for r in sorted(rows, key=lambda r: (r["world_seed"], r["seed"], r["strategy"])):
        end = r["regret_end_per_1k"]
        missed = r["regret_end_per_1k.missed.mini_shop"]
        within = r["regret_end_per_1k.within.mini_shop"]
        # every other group's "missed" part: the partners'
        partners = sum(
            v for k, v in r.items() if k.startswith(MISSED) and k != f"{MISSED}mini_shop"
        )
        print(f"| {r['world_seed']} | {r['seed']} | `{r['strategy']}` | {r['value_per_1k']:.1f} "
              f"| {100 * r['oracle_share']:.1f} % | {r['regret_14d']:,.0f} "
              f"| {r['slope_last30d']:.1f} | {end:.1f} | {missed:.1f} ({100 * missed / end:.0f} %) "
              f"| {within:.1f} ({100 * within / end:.0f} %) "
              f"| {partners:.1f} ({100 * partners / end:.0f} %) |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
