"""The study's per-cell table (markdown) from the rows of ``levers.jsonl``, against the
recorded rows of the recommended policy and the shared linear policy on the same cells.

    python experiments/early_levers/table.py [levers.jsonl ...]

The recorded rows are those printed in ``experiments/factor_prior/README.md``
(``factor_balanced_half`` is ``value_ts_protected``'s engine, ``recommended`` is
``contextual_ts_protected``'s); a variant's share difference is computed from the recorded
value/1k on this run's oracle/1k (the same impressions), so it is exact to ±0.03 points.
The rows of ``value_ts_protected`` with the intercept alone are read from
``experiments/shared_intercept/intercept.jsonl`` (the ablation of B, C and D).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTERCEPT = HERE.parent / "shared_intercept" / "intercept.jsonl"

#: (world, seed): value/1k, share %, regret over the first 14 days, late slope, Mini Shop %
RECOMMENDED = {
    (7, 1): (180.9, 78.3, 1547, 97.3, 36.9),
    (7, 2): (180.8, 78.0, 1360, 104.6, 29.6),
    (7, 3): (178.8, 77.2, 1516, 106.3, 35.3),
    (11, 1): (177.4, 74.0, 1384, 127.4, 37.1),
    (11, 2): (180.2, 75.1, 1675, 123.6, 45.7),
    (11, 3): (184.1, 76.7, 1297, 121.2, 33.3),
}
SHARED_LINEAR = {
    (7, 1): (170.6, 73.8, 1309, 134.2, 32.9),
    (7, 2): (169.7, 73.2, 1202, 144.8, 28.2),
    (7, 3): (172.4, 74.4, 981, 141.1, 31.6),
    (11, 1): (170.8, 71.3, 1111, 157.8, 24.6),
    (11, 2): (173.4, 72.3, 1289, 160.2, 34.4),
    (11, 3): (176.7, 73.6, 974, 158.2, 29.8),
}
LABEL = {
    "intercept": "`value_ts_protected` + intercept (recorded)",
    "offset_em": "A `learn_offset_sd`",
    "intercept_conv": "B intercept + `typical_conversion` 0.05",
    "intercept_offset_em": "C intercept + `learn_offset_sd`",
    "intercept_weak_groups": "D intercept + group priors x 0.25",
}


def pct(new: float, old: float) -> str:
    return f"{100.0 * (new / old - 1.0):+.0f} %".replace("-", "−")


def main(paths: list[Path]) -> int:
    rows = [json.loads(line) for p in paths for line in p.open()]
    rows = [r for r in rows if r["strategy"] in LABEL]
    for line in INTERCEPT.open():
        r = json.loads(line)
        if r["strategy"] == "value_ts_protected":
            rows.append({**r, "strategy": "intercept"})
    order = list(LABEL)
    rows.sort(key=lambda r: (r["world_seed"], r["seed"], order.index(r["strategy"])))
    print(
        "| world | seed | strategy | value/1k | share of the oracle | regret, first 14 days "
        "| regret slope, last 30 days (/day) | Mini Shop, first 14 days |"
    )
    print("|---|---|---|---|---|---|---|---|")
    done: set[tuple[int, int]] = set()
    wins: dict[str, list[bool]] = {}
    for r in rows:
        cell = (r["world_seed"], r["seed"])
        if cell in RECOMMENDED and cell not in done:
            for name, ref in (
                ("`value_ts_protected`", RECOMMENDED),
                ("`contextual_ts_protected`", SHARED_LINEAR),
            ):
                v, s, e, sl, m = ref[cell]
                head = f"| {cell[0]} | {cell[1]} | {name} (recorded) | {v:.1f} | {s:.1f} % "
                print(f"{head}| {e:,} | {sl:.1f} | {m:.1f} % |")
            done.add(cell)
        share = 100.0 * r["oracle_share"]
        extra = ""
        if cell in RECOMMENDED:
            base_share = 100.0 * RECOMMENDED[cell][0] / r["oracle_per_1k"]
            diff = share - base_share
            early_base, early_lin = RECOMMENDED[cell][2], SHARED_LINEAR[cell][2]
            extra = f" ({diff:+.1f})".replace("-", "−")
            e = r["regret_14d"]
            early = f"{e:,.0f} ({pct(e, early_base)}; {pct(e, early_lin)})"
            if r["strategy"] != "intercept":
                won = diff > 0 and r["regret_14d"] < early_base
                wins.setdefault(r["strategy"], []).append(won)
        else:
            early = f"{r['regret_14d']:,.0f}"
        print(
            f"| {cell[0]} | {cell[1]} | {LABEL[r['strategy']]} | {r['value_per_1k']:.1f} | "
            f"{share:.1f} %{extra} | {early} | {r['slope_last30d']:.1f} | "
            f"{100 * r['mini_early']:.1f} % |"
        )
    print("\nMeans per world (share of the oracle, early regret, late slope, Mini Shop early):")
    for name in order:
        for ws in (7, 11, 13, 17):
            sel = [r for r in rows if r["strategy"] == name and r["world_seed"] == ws]
            if not sel:
                continue
            k = len(sel)
            share = sum(100 * r["oracle_share"] for r in sel) / k
            early = sum(r["regret_14d"] for r in sel) / k
            slope = sum(r["slope_last30d"] for r in sel) / k
            mini = sum(100 * r["mini_early"] for r in sel) / k
            print(f"  {name} world {ws} ({k} seeds): {share:.1f} %, {early:,.0f}, ", end="")
            print(f"{slope:.1f}, {mini:.1f} %")
    for name, w in wins.items():
        print(f"\n{name}: {sum(w)} of {len(w)} cells won on share AND early regret", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main([Path(p) for p in sys.argv[1:]] or [HERE / "levers.jsonl"]))
