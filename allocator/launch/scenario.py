"""The main job: run a scenario's grid, track it in MLflow, print the ranked comparison.

``allocator run configs/wechat_entry.yaml`` lands here. The driver builds the world once,
validates every cell, runs the cells on the given runner (local Ray by default), then —
and only then, only here — writes MLflow runs, the summary table and the plots.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from allocator.constraints.config import GroupTarget
from allocator.launch import view
from allocator.launch.orchestrate import Launch, LaunchOutcome
from allocator.launch.runner import Runner, TaskResult
from allocator.launch.tracking import CellRecord, flatten
from allocator.registry import MINI_SHOP
from allocator.scenario import report
from allocator.scenario.build import (
    CellTask,
    grid_cells,
    optimises_app_value,
    replay_left_out,
)
from allocator.scenario.config import Scale, ScenarioConfig, check_impressions, load_scenario
from allocator.scenario.simulate import CellResult, Shared, run_cell
from allocator.scenario.world import World

NOTE = (
    "\nvalue = app value (revenue share + commission + Mini Shop strategic weight) per "
    "1,000 impressions, true expectation; floor slack = worst sliding-window share "
    "minus floor (>= 0 held); protect cost = value given up against the same policy "
    "without contracts (without one listed: the contract layer's own estimate, blank when "
    "the policy's objective is not the app value); regret vs the oracle; vs best = "
    "value/1k minus the best strategy's (the oracle aside) on the same seeds, ± the 95 % t "
    "interval's half-width over seeds (same traffic per seed: what is left is the "
    "strategies' own variation).\n"
)


def run_scenario(
    config_path: str | Path,
    runner: Runner,
    scale: Scale = "default",
    tracking_uri: str | None = None,
    out_dir: str | Path = "runs",
    launch_id: str | None = None,
    impressions: int | None = None,
    stream: TextIO | None = None,
    emit_logs: bool = False,
) -> LaunchOutcome:
    """Run every cell of the scenario and report; failures are reported, never dropped."""
    scenario = load_scenario(config_path)
    n = cell_impressions(scenario, scale, impressions)
    world, cells = prepare_cells(scenario, n)
    resolved = scenario.model_dump(mode="json")
    launch = Launch(
        scenario.experiment.name, resolved, tracking_uri, launch_id, out_dir, stream,
        tags={"scale": scale},
    )  # fmt: skip
    launch.say(
        f"{len(cells)} cells ({len(scenario.strategies)} strategies × "
        f"{len(scenario.experiment.seeds)} seeds), {n:,} impressions each, "
        f"launch {launch.launch_id}\n"
    )
    log_dir = launch.directory / "logs"
    if emit_logs:  # absolute: Ray workers do not share the driver's working directory
        cells = [dataclasses.replace(c, log_dir=str(log_dir.resolve())) for c in cells]
    results = launch.run(
        runner, run_cell, cells, Shared(world, scenario),
        lambda cell, res: _cell_record(cell, res, scenario, scale),
    )  # fmt: skip
    table_cells: list[tuple[str, int, dict[str, float] | None]] = []
    by_strategy: dict[str, list[CellResult]] = {}
    for cell, res in zip(cells, results, strict=True):
        value: CellResult | None = res.value if res.ok else None
        if value is not None:
            by_strategy.setdefault(cell.strategy, []).append(value)
        table_cells.append((cell.strategy, cell.seed, None if value is None else value.metrics))
    oracles = frozenset(s.name for s in scenario.strategies if s.kind == "oracle")
    other = frozenset(c.strategy for c in cells if not optimises_app_value(c.spec, scenario))
    rows = report.ranked_rows(
        table_cells, scenario.experiment.reward_scale, _twins(scenario), oracles, other
    )
    table = report.format_table(rows)
    files = _write_files(launch.directory, rows, table, resolved, by_strategy, world, cells)
    trailer = f"\nfiles: {launch.directory}\n"
    if emit_logs:
        trailer += (
            f"decision logs: {log_dir} (replay one with: allocator replay "
            f"{log_dir}/<cell>.replay.yaml)\n"
        )
        for line in replay_left_out(scenario, world):
            trailer += f"  not a replay candidate: {line}\n"
    return launch.finish(
        rows, table, NOTE,
        {"scale": scale, "impressions_per_cell": str(n), "cells": str(len(cells))},
        files, trailer, "grid.strategy", key_sections(scenario, world),
    )  # fmt: skip


def cell_impressions(scenario: ScenarioConfig, scale: Scale, impressions: int | None) -> int:
    """Impressions per cell: an override (checked), else the scale's."""
    if impressions is None:
        return scenario.experiment.impressions[scale]
    return check_impressions(impressions)


def prepare_cells(scenario: ScenarioConfig, n: int) -> tuple[World, list[CellTask]]:
    """The world and the validated grid: every check ``run`` makes before launching
    (``allocator check`` makes them too, so the two agree)."""
    world = World(scenario.world, seed=scenario.experiment.world_seed)
    return world, grid_cells(scenario, world, n)


def key_sections(scenario: Any, world: World) -> list[view.Section]:
    """The charts a launch is read for, from this scenario's groups and contracts."""
    groups = set(world.arm_groups)
    c = view.chart
    out = [
        view.Section("Value and regret", (
            c("value per 1,000 impressions (app value)", "value_per_1k"),
            c("cumulative regret against the oracle", "curve.cum_regret", kind="line"),
            c("regret per 1,000 impressions", "regret_per_1k"),
        )),
    ]  # fmt: skip
    floors = [
        c(f"{k.name}: {k.target.group} share against its floor",
          f"curve.share.{k.target.group}", f"curve.floor.{k.name}", kind="line")
        for cset in scenario.contracts.values()
        for k in cset.constraints
        if k.kind == "floor" and isinstance(k.target, GroupTarget) and k.target.group in groups
    ]  # fmt: skip
    if floors:
        out.append(view.Section("Partner floors: share against floor", tuple(floors)))
    if MINI_SHOP in groups:
        out.append(view.Section("Mini Shop", (
            c("Mini Shop share of impressions", f"curve.share.{MINI_SHOP}", kind="line"),
            c("Mini Shop share at the end of the period", f"share_end.{MINI_SHOP}"),
            c("regret per 1,000 impressions at the end: a merchant was best, another group "
              "was served", f"regret_end_per_1k.missed.{MINI_SHOP}"),
            c("regret per 1,000 impressions at the end: a merchant served, not the best one",
              f"regret_end_per_1k.within.{MINI_SHOP}"),
        )))  # fmt: skip
    if any(getattr(s, "contracts", None) for s in scenario.strategies):
        out.append(view.Section("Protection cost", (
            c("protection cost per 1,000 impressions (layer attribution)",
              "protection_cost_per_1k"),
        )))  # fmt: skip
    return out


def _twins(scenario: Any) -> dict[str, str]:
    """Constrained policy strategies → the same engine without contracts, when listed."""
    free = {
        json.dumps(s.engine, sort_keys=True): s.name
        for s in scenario.strategies
        if s.kind == "policy" and not s.contracts and not s.sweep
    }
    return {
        s.name: free[key]
        for s in scenario.strategies
        if s.kind == "policy"
        and s.contracts
        and not s.sweep
        and (key := json.dumps(s.engine, sort_keys=True)) in free
    }


def _cell_record(cell: CellTask, res: TaskResult, scenario: Any, scale: str) -> CellRecord:
    params = flatten(
        {
            "strategy": cell.spec,
            "seed": cell.seed,
            "impressions": cell.n_impressions,
            "scale": scale,
            "experiment": scenario.experiment.model_dump(mode="json"),
            "world": scenario.world.model_dump(mode="json"),
        }
    )
    contracts = cell.spec.get("contracts")
    if contracts:
        params.update(flatten(scenario.contracts[contracts].model_dump(mode="json"), "contracts."))
    value: CellResult | None = res.value if res.ok else None
    if value is None:
        return CellRecord(cell.name, cell.coords, params, error=res.error or "failed")
    metrics = {**value.metrics, "cell_seconds": value.seconds}
    if contracts and optimises_app_value(cell.spec, scenario):  # else not in app value
        row = report.cell_row(value.metrics, scenario.experiment.reward_scale)
        metrics["protection_cost_per_1k"] = row["protection_cost_per_1k"]
    return CellRecord(cell.name, cell.coords, params, metrics, value.curves)


def _write_files(
    launch_dir: Path, rows: list[dict[str, Any]], table: str, resolved: dict[str, Any],
    by_strategy: dict[str, list[CellResult]], world: World, cells: list[CellTask],
) -> list[Path]:  # fmt: skip
    files = [launch_dir / "summary.csv", launch_dir / "summary.txt", launch_dir / "config.json"]
    files[0].write_text(report.table_csv(rows))
    files[1].write_text(table + "\n")
    files[2].write_text(json.dumps(resolved, indent=2, default=str))
    if by_strategy:
        mean_curves = {
            name: {
                key: (rs[0].curves[key][0], np.mean([r.curves[key][1] for r in rs], axis=0))
                for key in rs[0].curves
            }
            for name, rs in by_strategy.items()
        }
        groups = list(dict.fromkeys(world.arm_groups))
        floors = {
            key: _floor_group(key, resolved)
            for c in mean_curves.values()
            for key in c
            if key.startswith("curve.floor.")
        }
        n_bins = next(iter(mean_curves.values()))["curve.cum_regret"][0].shape[0]
        days = (world.end_s - world.start_s) / 86400.0
        files += report.plot_comparison(mean_curves, groups, floors, days / n_bins, launch_dir)
    return files


def _floor_group(curve_key: str, resolved: dict[str, Any]) -> str:
    name = curve_key[len("curve.floor.") :]
    for cset in resolved.get("contracts", {}).values():
        for c in cset["constraints"]:
            if c["name"] == name:
                return str(c["target"].get("group", ""))
    return ""
