"""The launch's comparison: a ranked table over strategies (means over seeds) and plots."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from allocator.registry import MINI_SHOP

#: (column, header, format) of the ranked table, in order
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("value_per_1k", "value/1k", "{:.1f}"),
    ("revenue_per_1k", "revenue/1k", "{:.1f}"),
    ("gmv_per_1k", "GMV/1k", "{:.0f}"),
    ("conversion_pct", "conv %", "{:.2f}"),
    (f"{MINI_SHOP}_share_end", f"{MINI_SHOP} end", "{:.3f}"),
    ("worst_floor_slack", "floor slack", "{:+.3f}"),
    ("protection_cost_per_1k", "protect cost/1k", "{:.1f}"),
    ("regret_per_1k", "regret/1k", "{:.1f}"),
)


def cell_row(
    metrics: dict[str, float], reward_scale: float, app_value: bool = True
) -> dict[str, float]:
    """The table's quantities for one cell. The constraint layer's cost is in the units of
    the engine's objective: app value × ``reward_scale`` when ``app_value`` (the engine
    optimises the world's objective), else in other units (orders, clicks), and then left
    blank (NaN) rather than shown as app value."""
    slacks = [
        v for k, v in metrics.items() if k.startswith("floor.") and k.endswith(".worst_slack")
    ]
    costs = [v for k, v in metrics.items() if k.startswith("contract.") and k.endswith(".cost")]
    cost = sum(costs) if costs else float("nan")
    n = max(metrics.get("impressions", 1.0), 1.0)
    return {
        "value_per_1k": metrics["value_per_1k"],
        "revenue_per_1k": metrics["revenue_per_1k"],
        "gmv_per_1k": metrics["gmv_per_1k"],
        "conversion_pct": 100.0 * metrics["conversion"],
        f"{MINI_SHOP}_share_end": metrics.get(f"share_end.{MINI_SHOP}", float("nan")),
        "worst_floor_slack": min(slacks) if slacks else float("nan"),
        "protection_cost_per_1k": cost / reward_scale / n * 1000.0 if app_value else math.nan,
        "regret_per_1k": metrics["regret_per_1k"],
    }


def ranked_rows(
    cells: Sequence[tuple[str, int, dict[str, float] | None]],
    reward_scale: float,
    twins: dict[str, str] | None = None,
    references: frozenset[str] = frozenset(),
    other_objective: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Mean over seeds per strategy, ranked by value/1k (failed cells counted, not averaged).

    ``cells`` are (strategy, seed, metrics or None if the cell failed). ``twins`` maps a
    constrained strategy to the same engine without contracts: its cost of protection is
    then the value it gives up against that twin on the same traffic (otherwise the
    constraint layer's own attribution, Σ(π − p)·μ̂, is shown, except for the strategies
    in ``other_objective``, whose μ̂ is not in app value: blank). Each row also gets its
    value/1k against the best row's on the seeds both ran (:func:`paired_gap`), the best
    among the strategies not in ``references`` (the oracle: not a strategy one could run).
    """
    by: dict[str, list[dict[str, float]]] = {}
    value: dict[str, dict[int, float]] = {}
    failed: dict[str, int] = {}
    for strategy, seed, metrics in cells:
        by.setdefault(strategy, [])
        value.setdefault(strategy, {})
        failed.setdefault(strategy, 0)
        if metrics is None:
            failed[strategy] += 1
        else:
            by[strategy].append(cell_row(metrics, reward_scale, strategy not in other_objective))
            value[strategy][seed] = metrics["value_per_1k"]
    rows = []
    for strategy, runs in by.items():
        row: dict[str, Any] = {"strategy": strategy, "seeds": len(runs), "failed": failed[strategy]}
        for key, _, _ in COLUMNS:
            vals = np.array([r[key] for r in runs], dtype=np.float64)
            row[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        rows.append(row)
    by_name = {r["strategy"]: r for r in rows}
    for name, twin in (twins or {}).items():
        if name in by_name and twin in by_name:
            gap = by_name[twin]["value_per_1k"] - by_name[name]["value_per_1k"]
            by_name[name]["protection_cost_per_1k"] = gap
    rows.sort(key=lambda r: -np.inf if not np.isfinite(r["value_per_1k"]) else -r["value_per_1k"])
    best = next((r["strategy"] for r in rows if r["strategy"] not in references), None)
    for i, row in enumerate(rows, 1):
        row["rank"] = i
        name = row["strategy"]
        gap = None
        if best is not None and name != best and name not in references:
            gap = paired_gap(value[name], value[best])
        row["vs_best_per_1k"], row["vs_best_half_width"] = gap or (float("nan"), float("nan"))
    return rows


#: two-sided 95 % quantiles of Student's t by degrees of freedom (1-30; 1.96 beyond)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def paired_gap(a: dict[int, float], b: dict[int, float]) -> tuple[float, float] | None:
    """Mean of ``a[s] − b[s]`` over the seeds both have, and its 95 % Student t interval's
    half-width (NaN with one seed); None without a common seed. Strategies of one seed see
    the same impressions and outcome draws, so the traffic's variance cancels in the
    difference and what is left is the strategies' own (their draws, their learning)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds])
    return float(d.mean()), t_half_width(d)


def t_half_width(x: np.ndarray) -> float:
    """Half-width of the 95 % Student t interval of the mean of ``x`` (NaN below 2 values)."""
    if x.size < 2:
        return float("nan")
    t = _T975[x.size - 2] if x.size - 1 <= len(_T975) else 1.96
    return float(t * x.std(ddof=1) / np.sqrt(x.size))


def _gap_text(row: dict[str, Any]) -> str:
    mean, half = row["vs_best_per_1k"], row["vs_best_half_width"]
    if not np.isfinite(mean):
        return "-"
    return f"{mean:+.1f}" + (f" ± {half:.1f}" if np.isfinite(half) else "")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["#", "strategy"] + [h for _, h, _ in COLUMNS] + ["vs best", "seeds"]
    body = []
    for r in rows:
        cells = [str(r["rank"]), r["strategy"]]
        for key, _, fmt in COLUMNS:
            v = r[key]
            cells.append("-" if not np.isfinite(v) else fmt.format(v))
        cells.append(_gap_text(r))
        cells.append(f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else ""))
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) if i != 1 else h.ljust(w) for i, (h, w) in
                       enumerate(zip(headers, widths, strict=True)))]  # fmt: skip
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append("  ".join(c.rjust(w) if i != 1 else c.ljust(w) for i, (c, w) in
                               enumerate(zip(b, widths, strict=True))))  # fmt: skip
    return "\n".join(lines)


def table_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = ["rank", "strategy", *(k for k, _, _ in COLUMNS), "vs_best_per_1k",
              "vs_best_half_width", "seeds", "failed"]  # fmt: skip
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot_comparison(
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    groups: Sequence[str],
    floors: dict[str, str],
    day_per_step: float,
    out_dir: Path,
) -> list[Path]:
    """Two PNGs: cumulative regret per strategy; each group's share over time vs its floor.

    ``curves`` maps strategy -> its (seed-averaged) curves; ``floors`` maps a floor curve
    key to the group it protects.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, c in curves.items():
        steps, values = c["curve.cum_regret"]
        ax.plot(steps * day_per_step, values, label=name)
    ax.set_xlabel("simulated day")
    ax.set_ylabel("cumulative regret (app value)")
    ax.set_title("Cumulative regret against the oracle")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "cumulative_regret.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 * len(groups)), sharex=True)
    for ax, g in zip(np.atleast_1d(axes), groups, strict=True):
        for name, c in curves.items():
            key = f"curve.share.{g}"
            if key in c:
                steps, values = c[key]
                ax.plot(steps * day_per_step, values, label=name, lw=1)
        for fkey, fg in floors.items():
            if fg == g:
                for c in curves.values():
                    if fkey in c:
                        steps, values = c[fkey]
                        ax.plot(steps * day_per_step, values, "k--", lw=1.5, label=fkey[12:])
                        break
        ax.set_ylabel(f"{g} share")
    np.atleast_1d(axes)[0].legend(fontsize=7, ncol=2)
    np.atleast_1d(axes)[-1].set_xlabel("simulated day")
    fig.suptitle("Share of impressions per group (dashed: contract floor)")
    fig.tight_layout()
    paths.append(out_dir / "group_shares.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
