"""The replay launch's report: per policy and estimator, the mean over cells of the value,
its interval, the effective sample size and (learning policies) the acceptance rate, as the
printed table, ``summary.txt`` and ``summary.csv``.

Policies are ranked by their point values, which orders them even where the data cannot:
``vs_top`` says, on each policy's ranking row, whether its interval meets the top policy's
(``overlaps``: not ordered by the data) or lies wholly below it (``below``)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("policy", "estimator", "value", "lower", "upper", "ess", "acceptance_rate", "cells",
           "vs_top")  # fmt: skip


def headline(estimators: Sequence[str]) -> str:
    """The estimator a frozen policy is ranked by."""
    for name in ("dr", "sndr", "snips", "ips"):
        if name in estimators:
            return name
    return estimators[0]


def ranked_by(names: Sequence[str], head: str) -> str:
    """The estimate a policy is ranked and charted by, among the ``names`` it has:
    ``replay`` for a learning policy, else the headline ``head``, else (a policy without it:
    the logger of a foreign log has only ips and snips) its first in the headline order."""
    if "replay" in names:
        return "replay"
    if head in names or not names:
        return head
    return headline(names)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summary_rows(
    cells: Sequence[tuple[str, dict[str, float]]], order: Sequence[str], head: str
) -> list[dict[str, Any]]:
    """One row per policy and estimator (metrics ``estimate/<name>[/lower|/upper]``),
    policies ranked by their headline value (``replay`` for learning ones)."""
    by_policy: dict[str, list[dict[str, float]]] = {}
    for name, metrics in cells:
        by_policy.setdefault(name, []).append(metrics)
    rows: list[dict[str, Any]] = []
    ranked: list[tuple[float, str]] = []
    ranking: dict[str, str] = {}
    for policy in order:
        ms = by_policy.get(policy, [])
        names = [k[len("estimate/") :] for k in (ms[0] if ms else {})
                 if k.startswith("estimate/") and k.count("/") == 1]  # fmt: skip
        for est in names:
            rows.append({
                "policy": policy, "estimator": est,
                "value": _mean([m[f"estimate/{est}"] for m in ms]),
                "lower": _mean([m[f"estimate/{est}/lower"] for m in ms]),
                "upper": _mean([m[f"estimate/{est}/upper"] for m in ms]),
                "ess": _mean([m["ess"] for m in ms if "ess" in m]),
                "acceptance_rate": _mean([m["acceptance_rate"] for m in ms
                                          if "acceptance_rate" in m]),
                "cells": len(ms), "vs_top": "",
            })  # fmt: skip
        key = ranking[policy] = ranked_by(names, head)
        vals = [m[f"estimate/{key}"] for m in ms if f"estimate/{key}" in m]
        ranked.append((-_mean(vals) if vals else math.inf, policy))
    rank = {policy: i for i, (_, policy) in enumerate(sorted(ranked))}
    rows.sort(key=lambda r: rank[r["policy"]])
    _compare_to_top([r for r in rows if r["estimator"] == ranking[r["policy"]]])
    return rows


def _compare_to_top(heads: list[dict[str, Any]]) -> None:
    """Fill ``vs_top`` on each policy's ranking row (``heads``, best first)."""
    top = next((r for r in heads if not math.isnan(r["value"])), None)
    if top is None:
        return
    top["vs_top"] = "top"
    for r in heads:
        if r is top or math.isnan(r["value"]) or math.isnan(r["upper"]):
            continue
        if math.isnan(top["lower"]):
            return
        r["vs_top"] = "below" if r["upper"] < top["lower"] else "overlaps"


def _num(v: float, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if math.isnan(v) else f"{v:>{width}.{digits}f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'policy':<22}{'estimator':<10}{'value':>10}  {'interval':<21}{'ess':>9}"
             f"{'accept':>8}  {'cells':>5}  vs top"]  # fmt: skip
    for r in rows:
        interval = f"[{_num(r['lower'], 8, 5).strip()}, {_num(r['upper'], 8, 5).strip()}]"
        lines.append(
            f"{r['policy']:<22}{r['estimator']:<10}{_num(r['value'], 10, 5)}  {interval:<21}"
            f"{_num(r['ess'], 9, 0)}{_num(r['acceptance_rate'], 8, 3)}  {r['cells']:>5}  "
            f"{r['vs_top']}".rstrip()
        )
    return "\n".join(lines)


def write_summary(rows: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    """``summary.txt`` (the table) and ``summary.csv`` (the rows) in ``directory``."""
    txt, table = directory / "summary.txt", format_table(rows)
    txt.write_text(table + "\n")
    path = directory / "summary.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return [txt, path]
