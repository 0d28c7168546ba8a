"""Decompose the recommended policy's gap to the oracle on the scenario, over several seeds.

For each world seed and traffic seed it measures, on the same impressions: the oracle (the
best candidate of every impression, contracts ignored), the best contract-feasible
allocation (the oracle made to honour the partner floors and the cold-merchant floor, see
:func:`feasible_oracle`), and every strategy of ``config.yaml`` (or ``--strategies``). It
prints per cell and per strategy (mean over traffic seeds, with min and max): value/1k, its
share of the oracle and of the feasible oracle, regret over the first 14 simulated days,
regret slope per day over the last 30, and the Mini Shop's share of the first 14 days.
Cells run one after the other in this process (one core).

    python experiments/oracle_gap/run.py --world-seeds 7 11 --seeds 1 2 3
    python experiments/oracle_gap/run.py --strategies contextual_ts_protected noise_0.02 \
        --impressions 50000 --out screen.jsonl
    python experiments/oracle_gap/run.py --config experiments/shared_intercept/config.yaml \
        --arm-intercept --world-seeds 7 --seeds 1
    python experiments/oracle_gap/run.py --config configs/wechat_entry.yaml --trend-context \
        --strategies value_ts_protected --world-seeds 7 --seeds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from allocator.config import load_yaml, parse_config
from allocator.constraints.config import ColdArmsTarget
from allocator.registry import MINI_SHOP
from allocator.scenario import kernels as k
from allocator.scenario.build import grid_cells, scenario_arms
from allocator.scenario.compliance import floor_tracks
from allocator.scenario.config import ScenarioConfig, set_dotted
from allocator.scenario.simulate import Shared, run_cell, value_rates
from allocator.scenario.world import World

HERE = Path(__file__).resolve().parent
EARLY_DAYS, LATE_DAYS = 14.0, 30.0


def load(
    path: Path, world_seed: int, seeds: list[int], merchants: int, quality_sd: float
) -> ScenarioConfig:
    data: dict[str, Any] = load_yaml(path)
    data = set_dotted(data, "experiment.world_seed", world_seed)
    data = set_dotted(data, "experiment.seeds", seeds)
    if merchants:
        data = set_dotted(data, "world.mini_shop.n_merchants", merchants)
    if quality_sd:
        data = set_dotted(data, "world.mini_shop.quality_sd", quality_sd)
    cfg: ScenarioConfig = parse_config(ScenarioConfig, data, "config.yaml")
    return cfg


def _force(
    rows_in_scope: np.ndarray, target_value: np.ndarray, target_flat: np.ndarray,
    chosen: np.ndarray, best: np.ndarray, locked: np.ndarray, share: np.ndarray,
    hit: np.ndarray,
) -> None:  # fmt: skip
    """Move the cheapest in-scope rows onto the target until ``share`` of them serve it.

    ``hit`` marks rows already serving the target; moved and hit rows are locked so a
    later floor cannot take them back."""
    need = int(np.ceil(share[rows_in_scope].sum())) - int(hit[rows_in_scope].sum())
    movable = np.flatnonzero(rows_in_scope & ~hit & ~locked)
    locked |= rows_in_scope & hit
    if need <= 0 or movable.size == 0:
        return
    loss = best[movable] - target_value[movable]
    pick = movable[np.argsort(loss, kind="stable")[:need]]
    chosen[pick] = target_flat[pick]
    best[pick] = target_value[pick]
    locked[pick] = True


def _best_where(ptr: np.ndarray, value: np.ndarray, mask: np.ndarray) -> tuple[Any, Any]:
    """Per row: the best value among masked candidates (-inf if none) and its flat index."""
    masked = np.where(mask, value, -np.inf)
    pos = np.empty(ptr.shape[0] - 1, dtype=np.int64)
    val = np.empty(ptr.shape[0] - 1)
    k.row_argmax(ptr, masked, pos, val)
    return val, ptr[:-1] + pos


def feasible_oracle(world: World, scenario: ScenarioConfig, seed: int, n: int) -> dict[str, float]:
    """The oracle's value and a contract-feasible allocation's value on stream ``seed``.

    The feasible allocation starts from the oracle's choice in every impression of a
    feedback batch and, floor by floor, moves the in-scope impressions that lose least onto
    the floor's target until the floor's share of the batch is met (a batch of 256 is
    finer than the contracts' 1,000-impression window, so the floors hold on every window
    the contracts check). The cold-merchant floor is met the same way with each
    impression's best cold merchant (arrived less than ``max_age_s`` ago, served fewer
    than ``n_min`` times by this allocation). The tilt does not bind a deterministic
    choice. Greedy per floor: a lower bound on the best feasible value."""
    arms = scenario_arms(world)
    group_of_arm = np.array([arms.group_names.index(g) for g in arms.groups], dtype=np.int64)
    rates = value_rates(world, arms.group_names)
    name = next(iter(scenario.contracts))  # the config's contract set (the first)
    cset = scenario.contracts[name]
    tracks = floor_tracks(scenario, {"contracts": name}, arms, world)
    cold = [c for c in cset.constraints if isinstance(c.target, ColdArmsTarget)]
    served = np.zeros(len(arms.ids))
    mini = arms.group_names.index(MINI_SHOP)
    early_end = world.start_s + EARLY_DAYS * 86400.0
    tot = {"oracle": 0.0, "feasible": 0.0, "oracle_mini_early": 0.0,
           "feasible_mini_early": 0.0, "early": 0.0}  # fmt: skip
    batch = scenario.experiment.feedback_batch
    for chunk in world.stream(n, seed=seed):
        grp_all = group_of_arm[chunk.cand_idx]
        value_all = chunk.expected_gmv() * rates[grp_all]
        for lo in range(0, chunk.n, batch):
            hi = min(chunk.n, lo + batch)
            flo, fhi = int(chunk.cand_ptr[lo]), int(chunk.cand_ptr[hi])
            ptr = chunk.cand_ptr[lo : hi + 1] - flo
            idx, grp, val = chunk.cand_idx[flo:fhi], grp_all[flo:fhi], value_all[flo:fhi]
            t, cat, tier = chunk.timestamps[lo:hi], chunk.category[lo:hi], chunk.city_tier[lo:hi]
            best, chosen = _best_where(ptr, val, np.ones(val.shape[0], dtype=bool))
            oracle_group = grp[chosen]
            tot["oracle"] += best.sum()
            locked = np.zeros(hi - lo, dtype=bool)
            for tr in tracks:
                share = tr.schedule_at(t)
                tv, tf = _best_where(ptr, val, grp == tr.group)
                scope = (share > 0.0) & np.isfinite(tv)
                if tr.categories is not None:
                    scope &= np.isin(cat, list(tr.categories))
                if tr.tiers is not None:
                    scope &= np.isin(tier, list(tr.tiers))
                _force(scope, tv, tf, chosen, best, locked, share, grp[chosen] == tr.group)
            for c in cold:
                share = c.schedule.values_at(t)
                target = c.target
                assert isinstance(target, ColdArmsTarget)
                age = np.repeat(t, np.diff(ptr)) - world.arrival_s[idx]
                is_cold = (grp == arms.group_names.index(target.cold_in_group)) & (
                    age < target.max_age_s
                ) & (served[idx] < target.n_min)  # fmt: skip
                tv, tf = _best_where(ptr, val, is_cold)
                scope = (share > 0.0) & np.isfinite(tv)
                _force(scope, tv, tf, chosen, best, locked, share, is_cold[chosen])
            np.add.at(served, idx[chosen], 1.0)
            tot["feasible"] += best.sum()
            early = t < early_end
            tot["early"] += early.sum()
            tot["oracle_mini_early"] += (early & (oracle_group == mini)).sum()
            tot["feasible_mini_early"] += (early & (grp[chosen] == mini)).sum()
    per = 1000.0 / n
    e = max(tot["early"], 1.0)
    return {
        "oracle_per_1k": tot["oracle"] * per,
        "feasible_per_1k": tot["feasible"] * per,
        "oracle_mini_early": tot["oracle_mini_early"] / e,
        "feasible_mini_early": tot["feasible_mini_early"] / e,
    }


def _joint_rows(chunk: Any, lo: int, hi: int, feats: np.ndarray) -> tuple[Any, Any, Any]:
    """φ = vec(f ⊗ x) of every candidate of impressions ``lo:hi`` and their row numbers."""
    a, b = int(chunk.cand_ptr[lo]), int(chunk.cand_ptr[hi])
    rows = np.repeat(np.arange(hi - lo), np.diff(chunk.cand_ptr[lo : hi + 1]))
    f, x = feats[chunk.cand_idx[a:b]], chunk.contexts[lo:hi][rows]
    return np.einsum("na,nc->nac", f, x).reshape(b - a, -1), rows, slice(a, b)


def linear_ceiling(
    world: World, scenario: ScenarioConfig, seed: int, n: int, window_days: float,
    stride: int = 8,
) -> dict[str, float]:  # fmt: skip
    """What the shared linear model could earn with unlimited data: the least-squares fit
    of every candidate's true value on φ = vec(f ⊗ x) (one impression in ``stride``),
    then greedy on it, on the same impressions. ``static``: one fit for the whole period
    (no drift can be followed); ``windowed``: one fit per ``window_days`` (the world's
    drift followed at that resolution); ``offsets``: the windowed fit plus each arm's mean
    residual in the window (a merchant's own hidden quality, as a hybrid model learns it
    with unlimited data)."""
    arms = scenario_arms(world)
    group_of_arm = np.array([arms.group_names.index(g) for g in arms.groups], dtype=np.int64)
    rates = value_rates(world, arms.group_names)
    feats = arms.features
    dim = feats.shape[1] * arms.n_context
    n_win = int(np.ceil((world.end_s - world.start_s) / 86400.0 / window_days))
    gram, rhs = np.zeros((n_win + 1, dim, dim)), np.zeros((n_win + 1, dim))
    res_sum, res_n = np.zeros((n_win, len(arms.ids))), np.zeros((n_win, len(arms.ids)))

    def window(chunk: Any) -> np.ndarray:
        days = (chunk.timestamps - world.start_s) / 86400.0
        return np.minimum((days / window_days).astype(np.int64), n_win - 1)

    step = 2048
    for chunk in world.stream(n, seed=seed):  # fit pass
        value = chunk.expected_gmv() * rates[group_of_arm[chunk.cand_idx]]
        win = window(chunk)
        for lo in range(0, chunk.n, step * stride):
            hi = min(chunk.n, lo + step)
            phi, rows, sl = _joint_rows(chunk, lo, hi, feats)
            for w in np.unique(win[lo:hi]):
                sel = win[lo:hi][rows] == w
                g, r = phi[sel].T @ phi[sel], phi[sel].T @ value[sl][sel]
                gram[w] += g
                rhs[w] += r
                gram[n_win] += g
                rhs[n_win] += r
    ridge = 1e-9 * np.trace(gram[n_win]) / dim * np.eye(dim)
    theta = np.linalg.solve(gram + ridge, rhs[..., None])[..., 0]
    for chunk in world.stream(n, seed=seed):  # residual pass (same subsample)
        value = chunk.expected_gmv() * rates[group_of_arm[chunk.cand_idx]]
        win = window(chunk)
        for lo in range(0, chunk.n, step * stride):
            hi = min(chunk.n, lo + step)
            phi, rows, sl = _joint_rows(chunk, lo, hi, feats)
            w = win[lo:hi][rows]
            resid = value[sl] - np.einsum("nd,nd->n", phi, theta[w])
            np.add.at(res_sum, (w, chunk.cand_idx[sl]), resid)
            np.add.at(res_n, (w, chunk.cand_idx[sl]), 1.0)
    offsets = res_sum / np.maximum(res_n, 1.0)
    tot = {"static": 0.0, "windowed": 0.0, "offsets": 0.0}
    for chunk in world.stream(n, seed=seed):  # evaluation pass, every impression
        value = chunk.expected_gmv() * rates[group_of_arm[chunk.cand_idx]]
        win = window(chunk)
        for lo in range(0, chunk.n, step):
            hi = min(chunk.n, lo + step)
            phi, rows, sl = _joint_rows(chunk, lo, hi, feats)
            w = win[lo:hi][rows]
            ptr = chunk.cand_ptr[lo : hi + 1] - chunk.cand_ptr[lo]
            scores = {
                "static": phi @ theta[n_win],
                "windowed": np.einsum("nd,nd->n", phi, theta[w]),
            }
            scores["offsets"] = scores["windowed"] + offsets[w, chunk.cand_idx[sl]]
            for key, sc in scores.items():
                _, pick = _best_where(ptr, sc, np.ones(sc.shape[0], dtype=bool))
                tot[key] += value[sl][pick].sum()
    return {f"ceiling_{key}_per_1k": v * 1000.0 / n for key, v in tot.items()}


def summarise(metrics: dict[str, float], curves: dict[str, Any], days: float) -> dict[str, float]:
    """Value, oracle share, early regret, late regret slope, early Mini Shop share of a cell."""
    cum = np.asarray(curves["curve.cum_regret"][1])
    per_bin = days / cum.shape[0]
    first, last = round(EARLY_DAYS / per_bin), round(LATE_DAYS / per_bin)
    value_bins = np.diff(np.concatenate([[0.0], curves["curve.cum_value"][1]]))
    rate = np.asarray(curves["curve.value_per_1k"][1])
    imp = np.where(rate > 0, value_bins / np.where(rate > 0, rate, 1.0) * 1000.0, 0.0)
    mini = np.asarray(curves[f"curve.share.{MINI_SHOP}"][1])
    v, reg = metrics["value_per_1k"], metrics["regret_per_1k"]
    return {
        "value_per_1k": v,
        "oracle_per_1k": v + reg,
        "regret_14d": float(cum[first - 1]),
        "slope_last30d": float((cum[-1] - cum[-1 - last]) / (last * per_bin)),
        "mini_early": float((mini[:first] * imp[:first]).sum() / max(imp[:first].sum(), 1.0)),
    }


def with_intercept(world: World) -> None:
    """Append a constant arm feature, 1 for every arm (last column, ``intercept``): the
    shared models' weights on it are a level every arm shares, learned from all traffic,
    which each group's and merchant's own weights (prior mean 0) then deviate from."""
    world.arm_feature_names = (*world.arm_feature_names, "intercept")
    world.arm_features = np.ascontiguousarray(
        np.column_stack([world.arm_features, np.ones(world.n_arms)])
    )


def with_trend(world: World) -> None:
    """Append a context column every impression carries: ``log(1 + days since the start) /
    log(1 + period days)``, from 0 to 1 (last column, ``trend``). Crossed with the arm
    features, it lets a shared model give each group a level that moves with time (the Mini
    Shop's improvement) without forgetting anything."""
    world.context_names = (*world.context_names, "trend")
    make_chunk = world._chunk
    total = np.log1p((world.end_s - world.start_s) / 86400.0)

    def chunk(*args: Any) -> Any:
        c = make_chunk(*args)  # the kernel leaves the extra column at 0
        c.contexts[:, -1] = np.log1p((c.timestamps - world.start_s) / 86400.0) / total
        return c

    world._chunk = chunk  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "config.yaml")
    p.add_argument("--world-seeds", type=int, nargs="+", default=[7, 11])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--impressions", type=int, default=200_000)
    p.add_argument("--merchants", type=int, default=0)
    p.add_argument("--quality-sd", type=float, default=0.0)
    p.add_argument("--strategies", nargs="+", default=None, help="run only these")
    p.add_argument("--ceiling", action="store_true", help="also the linear model's ceiling")
    p.add_argument("--window-days", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=None, help="append the rows as JSON lines")
    p.add_argument(
        "--policy-seeds", type=int, nargs="+", default=None,
        help="replicates: run every strategy once per policy seed on each cell's traffic",
    )  # fmt: skip
    p.add_argument(
        "--arm-intercept", action="store_true", help="append a constant arm feature to the world"
    )
    p.add_argument(
        "--trend-context", action="store_true",
        help="append a time-trend context column to the world (see with_trend)",
    )  # fmt: skip
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    for ws in args.world_seeds:
        scenario = load(args.config, ws, list(args.seeds), args.merchants, args.quality_sd)
        world = World(scenario.world, seed=ws)
        if args.arm_intercept:
            with_intercept(world)
        if args.trend_context:
            with_trend(world)
        days = (world.end_s - world.start_s) / 86400.0
        shared = Shared(world, scenario)
        refs = {s: feasible_oracle(world, scenario, s, args.impressions) for s in args.seeds}
        if args.ceiling:
            for s in args.seeds:
                refs[s].update(
                    linear_ceiling(world, scenario, s, args.impressions, args.window_days)
                )
        for s, ref in refs.items():
            emit({"world_seed": ws, "seed": s, "strategy": "(references)", **ref})
        for cell in grid_cells(scenario, world, args.impressions):
            if cell.strategy == "oracle":
                continue
            if args.strategies is not None and cell.strategy not in args.strategies:
                continue
            for policy_seed in args.policy_seeds or [None]:
                res = run_cell(shared, dataclasses.replace(cell, policy_seed=policy_seed))
                row = summarise(res.metrics, res.curves, days)
                row["feasible_share"] = row["value_per_1k"] / refs[cell.seed]["feasible_per_1k"]
                row["oracle_share"] = row["value_per_1k"] / row["oracle_per_1k"]
                split = ("regret_per_1k.", "regret_end_per_1k")  # where the regret is (simulate)
                row.update({k: v for k, v in res.metrics.items() if k.startswith(split)})
                seeded = {} if policy_seed is None else {"policy_seed": policy_seed}
                emit({"world_seed": ws, "seed": cell.seed, "strategy": cell.strategy, **seeded,
                      "seconds": res.seconds, **row})  # fmt: skip
    table(rows)
    return 0


def table(rows: list[dict[str, Any]]) -> None:
    """Mean (min–max) over traffic seeds, per world seed and strategy."""
    cols = [("value_per_1k", "value/1k", 1.0), ("oracle_share", "% oracle", 100.0),
            ("feasible_share", "% feasible", 100.0), ("regret_14d", "regret 14d", 1.0),
            ("slope_last30d", "slope/day", 1.0), ("mini_early", "% mini 14d", 100.0)]  # fmt: skip
    print("\nworld strategy                  " + "".join(f"{h:>22}" for _, h, _ in cols))
    for ws in sorted({r["world_seed"] for r in rows}):
        here = [r for r in rows if r["world_seed"] == ws and r["strategy"] != "(references)"]
        refs = [r for r in rows if r["world_seed"] == ws and r["strategy"] == "(references)"]
        for r in refs:
            o, f = r["oracle_per_1k"], r["feasible_per_1k"]
            print(f"{ws:>5} seed {r['seed']}: oracle {o:.1f}/1k, feasible {f:.1f}/1k "
                  f"({100 * f / o:.1f} %); Mini Shop share of the first 14 days: oracle "
                  f"{100 * r['oracle_mini_early']:.1f} %, feasible "
                  f"{100 * r['feasible_mini_early']:.1f} %")  # fmt: skip
            for key in ("static", "windowed", "offsets"):
                c = r.get(f"ceiling_{key}_per_1k")
                if c is not None:
                    print(f"      linear ceiling, {key}: {c:.1f}/1k ({100 * c / o:.1f} %)")
        for name in dict.fromkeys(r["strategy"] for r in here):
            sel = [r for r in here if r["strategy"] == name]
            cells = []
            for key, _, f in cols:
                x = np.array([r[key] for r in sel]) * f
                cells.append(f"{x.mean():.1f} ({x.min():.1f}-{x.max():.1f})")
            print(f"{ws:>5} {name:<26}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
