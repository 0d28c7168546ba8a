"""One grid cell: a strategy run on-policy through the simulated world, measured exactly.

The world streams impressions in chunks; the strategy decides a feedback batch at a time,
outcomes are drawn from the world's truth and folded in before the next batch. Because the
truth of every candidate is known, the cell reports the strategy's exact expected value
and regret next to what it realised, its group shares over time against the contract
floors, and an off-policy check: its own log (exact propensities) evaluates the reference
strategy with every estimator, next to that strategy's true value on the same traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from allocator.decisions import Decisions
from allocator.registry import MINI_SHOP
from allocator.scenario import kernels as k
from allocator.scenario.build import CellTask, build_strategy, replay_split, scenario_arms
from allocator.scenario.compliance import FloorTrack, floor_tracks
from allocator.scenario.config import ScenarioConfig, StaticSplitSpec
from allocator.scenario.emit import LogBuffer, write_cell_log
from allocator.scenario.strategies import ScenarioArms, StaticSplit, Strategy, Tick
from allocator.scenario.world import World

OPE_MAX_ROWS = 200_000


class Shared(NamedTuple):
    """What every cell reads from the object store: the world and the scenario."""

    world: World
    scenario: ScenarioConfig


@dataclass
class CellResult:
    metrics: dict[str, float]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    seconds: float
    n_impressions: int
    extra: dict[str, Any] = field(default_factory=dict)


def value_rates(world: World, group_names: tuple[str, ...]) -> np.ndarray:
    """App value per unit of GMV for each group code: take rate, plus strategic weight in-app."""
    rates = np.array([world.take_rates[g] for g in group_names], dtype=np.float64)
    rates[list(group_names).index(MINI_SHOP)] += world.strategic_weight
    return rates


class _Acc:
    """Per-bin sums over the cell (curves) and per-impression arrays needed afterwards."""

    def __init__(self, n_bins: int, n_groups: int) -> None:
        self.n_bins, self.n_groups = n_bins, n_groups
        self.sums: dict[str, np.ndarray] = {}
        self.group_counts = np.zeros((n_bins, n_groups))
        # regret per bin, by the best candidate's group, and whether that group was served
        self.regret_split = np.zeros((n_bins, n_groups, 2))

    def add(self, name: str, bins: np.ndarray, values: np.ndarray) -> None:
        s = np.bincount(bins, weights=values, minlength=self.n_bins)
        self.sums[name] = self.sums.get(name, 0.0) + s

    def add_groups(self, bins: np.ndarray, groups: np.ndarray) -> None:
        flat = np.bincount(bins * self.n_groups + groups, minlength=self.n_bins * self.n_groups)
        self.group_counts += flat.reshape(self.n_bins, self.n_groups)

    def add_regret(
        self, bins: np.ndarray, best_groups: np.ndarray, missed: np.ndarray, regret: np.ndarray
    ) -> None:
        """``regret`` of each impression under its best candidate's group, ``missed`` (bool)
        where another group was served."""
        slot = (bins * self.n_groups + best_groups) * 2 + missed
        flat = np.bincount(slot, weights=regret, minlength=self.n_bins * self.n_groups * 2)
        self.regret_split += flat.reshape(self.n_bins, self.n_groups, 2)


def run_cell(shared: Shared, task: CellTask) -> CellResult:
    """Simulate ``task`` and return its metrics and curves (no MLflow here: driver logs)."""
    start = time.perf_counter()
    world, scenario = shared
    exp = scenario.experiment
    arms = scenario_arms(world)
    group_of_arm = np.array([arms.group_names.index(g) for g in arms.groups], dtype=np.int64)
    rates = value_rates(world, arms.group_names)
    take = np.array([world.take_rates[g] for g in arms.group_names], dtype=np.float64)
    own_seed = task.seed if task.policy_seed is None else task.policy_seed
    strategy: Strategy = build_strategy(task.spec, scenario, world, arms, own_seed)
    ope_ref = _ope_reference(scenario, arms, task)
    tracks = floor_tracks(scenario, task.spec, arms, world)
    n_bins = exp.curve_points
    span = world.end_s - world.start_s
    acc = _Acc(n_bins, len(arms.group_names))
    ope = LogBuffer()
    stride = max(1, int(np.ceil(task.n_impressions / OPE_MAX_ROWS)))
    batch = exp.feedback_batch
    n_seen = 0
    tick_no = 0
    log = LogBuffer() if task.log_dir else None
    contract_names: tuple[str, ...] = ()
    times: list[np.ndarray] = []
    served_groups: list[np.ndarray] = []
    present: list[np.ndarray] = []
    cats: list[np.ndarray] = []
    tiers: list[np.ndarray] = []
    for chunk in world.stream(task.n_impressions, seed=task.seed):
        cand_group = group_of_arm[chunk.cand_idx]
        value = chunk.p_click * chunk.p_order * chunk.order_value * rates[cand_group]
        n = chunk.timestamps.shape[0]
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            tick = Tick.of(chunk, lo, hi, cand_group, value)
            dec: Decisions = strategy.decide(tick)
            flat = tick.cand_ptr[:-1] + dec.positions
            chosen = tick.cand_idx[flat]
            sub = chunk.rows(lo, hi)
            click, order, gmv = world.draw_outcomes(sub, flat, task.seed)
            strategy.learn(tick, chosen, (click, order, gmv))
            _record(acc, tick, dec, flat, chosen, group_of_arm, rates, take, (click, order, gmv),
                    world.start_s, span, n_bins)  # fmt: skip
            times.append(tick.timestamps)
            served_groups.append(group_of_arm[chosen])
            pg = np.zeros((hi - lo, k.group_words(len(arms.group_names))), dtype=np.uint64)
            k.present_groups(tick.cand_ptr, tick.cand_group, pg)
            present.append(pg)
            cats.append(tick.category)
            tiers.append(tick.city_tier)
            reward = gmv * rates[group_of_arm[chosen]]
            if ope_ref is not None and tick_no % stride == 0 and dec.probabilities.size > 0:
                _log_for_ope(ope, ope_ref, tick, dec, flat, chosen, reward)
            if log is not None and dec.probabilities.size > 0:
                log.add(actions=chosen, rewards=reward, pscores=dec.propensities,
                        timestamps=tick.timestamps, contexts=tick.contexts,
                        category=tick.category, city_tier=tick.city_tier,
                        batch=np.full(hi - lo, dec.model_version), click=click, order=order,
                        gmv=gmv, cand_size=np.diff(tick.cand_ptr), cand_idx=tick.cand_idx,
                        probs=dec.probabilities, forced=dec.forced,
                        adjusted=dec.adjusted)  # fmt: skip
                contract_names = dec.constraint_names
            tick_no += 1
        n_seen += n
    metrics = _summarise(acc, arms, exp.end_share_window, n_seen)
    metrics.update(strategy.metrics())
    curves = _curves(acc, arms, tracks, world.start_s, span)
    t_all, g_all = np.concatenate(times), np.concatenate(served_groups)
    p_all, c_all, r_all = np.concatenate(present), np.concatenate(cats), np.concatenate(tiers)
    for tr in tracks:
        metrics.update(tr.measure(t_all, g_all, p_all, c_all, r_all))
    if ope_ref is not None and ope.parts:
        metrics.update(_ope_metrics(ope, world, task.seed, exp.ope_bootstrap))
    extra: dict[str, Any] = {}
    if log is not None and log.parts and task.log_dir is not None:
        path = write_cell_log(
            Path(task.log_dir), task.name, log, arms, _policy_kind(task.spec), contract_names,
            *replay_split(scenario, world),
        )  # fmt: skip
        extra["log"] = str(path)
    return CellResult(metrics, curves, time.perf_counter() - start, n_seen, extra)


def _policy_kind(spec: dict[str, Any]) -> str:
    """The engine's policy family, or the strategy kind for baselines."""
    engine = spec.get("engine")
    return str(engine["policy"]["kind"]) if engine else str(spec["kind"])


def _record(
    acc: _Acc, tick: Tick, dec: Decisions, flat: np.ndarray, chosen: np.ndarray,
    group_of_arm: np.ndarray, rates: np.ndarray, take: np.ndarray, outcomes: tuple[np.ndarray, ...],
    start_s: float, span: float, n_bins: int,
) -> None:  # fmt: skip
    click, order, gmv = outcomes
    n = chosen.shape[0]
    bins = np.minimum(((tick.timestamps - start_s) / span * n_bins).astype(np.int64), n_bins - 1)
    best_pos = np.empty(n, dtype=np.int64)
    best = np.empty(n)
    k.row_argmax(tick.cand_ptr, tick.value, best_pos, best)
    groups = group_of_arm[chosen]
    best_groups = tick.cand_group[tick.cand_ptr[:-1] + best_pos]
    acc.add_regret(bins, best_groups, best_groups != groups, best - tick.value[flat])
    acc.add("impressions", bins, np.ones(n))
    acc.add("value_true", bins, tick.value[flat])
    acc.add("oracle", bins, best)
    acc.add("value", bins, gmv * rates[groups])
    acc.add("revenue", bins, gmv * take[groups])
    acc.add("gmv", bins, gmv)
    acc.add("orders", bins, order)
    acc.add("clicks", bins, click)
    acc.add_groups(bins, groups)


def _ope_reference(scenario: ScenarioConfig, arms: ScenarioArms, task: CellTask) -> Any:
    name = scenario.experiment.ope_target
    if name is None:
        return None
    spec = next(s for s in scenario.strategies if s.name == name)
    return StaticSplit(spec, arms, 0) if isinstance(spec, StaticSplitSpec) else None


def _log_for_ope(
    ope: LogBuffer, ref: StaticSplit, tick: Tick, dec: Decisions, flat: np.ndarray,
    chosen: np.ndarray, reward: np.ndarray,
) -> None:  # fmt: skip
    target = ref.distribution(tick)
    truth = np.empty(chosen.shape[0])
    k.row_expectation(tick.cand_ptr, target, tick.value, truth)
    assert dec.probabilities.size > 0
    # target mass on candidates the logger could not choose: no estimator can see it
    unsupported = np.where(dec.probabilities > 0.0, 0.0, target).sum()
    ope.add(
        contexts=tick.contexts, actions=chosen, rewards=reward, pscores=dec.propensities,
        cand_ptr=np.diff(tick.cand_ptr), cand_idx=tick.cand_idx, target=target, truth=truth,
        unsupported=np.array([unsupported]),
    )  # fmt: skip


def _ope_metrics(ope: LogBuffer, world: World, seed: int, n_boot: int) -> dict[str, float]:
    from allocator.replay import LoggedData, evaluate

    sizes = ope.concat("cand_ptr")
    ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    data = LoggedData(
        arm_ids=tuple(world.arm_ids),
        actions=ope.concat("actions").astype(np.int64),
        rewards=ope.concat("rewards"),
        pscores=ope.concat("pscores"),
        contexts=ope.concat("contexts"),
        cand_ptr=ptr,
        cand_idx=ope.concat("cand_idx").astype(np.int64),
    )
    truth = float(ope.concat("truth").mean())
    unsupported = float(ope.concat("unsupported").sum()) / data.n_rounds
    if unsupported > 0.0:  # estimates would be silently biased: report why there are none
        return {"ope.truth": truth, "ope.rows": float(data.n_rounds),
                "ope.unsupported_mass": unsupported}  # fmt: skip
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0BE]))
    target = ope.concat("target")
    result = evaluate(data, target, reward_model="ridge", n_boot=n_boot, rng=rng)
    out = {"ope.truth": truth, "ope.rows": float(data.n_rounds)}
    for name, est in result.estimates.items():
        out[f"ope.{name}.value"] = est.value
        out[f"ope.{name}.low"] = est.low
        out[f"ope.{name}.high"] = est.high
        out[f"ope.{name}.covers_truth"] = float(est.low <= truth <= est.high)
    # the i.i.d. bootstrap on the same rows, for comparison with the default intervals
    boot = evaluate(data, target, estimators=("ips", "dr"), reward_model="ridge",
                    interval="bootstrap", n_boot=n_boot, rng=rng)  # fmt: skip
    for name, est in boot.estimates.items():
        out[f"ope.{name}.bootstrap_covers_truth"] = float(est.low <= truth <= est.high)
    out["ope.ess"] = result.diagnostics.effective_sample_size
    out["ope.max_weight"] = result.diagnostics.max_weight
    return out


def _summarise(acc: _Acc, arms: ScenarioArms, end_window: float, n: int) -> dict[str, float]:
    s = {key: float(v.sum()) for key, v in acc.sums.items()}
    per = 1000.0 / max(n, 1)
    m = {
        "impressions": float(n),
        "value_per_1k": s["value_true"] * per,
        "realised_value_per_1k": s["value"] * per,
        "revenue_per_1k": s["revenue"] * per,
        "gmv_per_1k": s["gmv"] * per,
        "orders_per_1k": s["orders"] * per,
        "ctr": s["clicks"] / max(n, 1),
        "conversion": s["orders"] / max(n, 1),
        "regret_per_1k": (s["oracle"] - s["value_true"]) * per,
        "regret_total": s["oracle"] - s["value_true"],
    }
    counts = acc.group_counts
    total = counts.sum(axis=0)
    n_end = max(1, round(acc.n_bins * end_window))
    end = counts[-n_end:].sum(axis=0)
    for j, g in enumerate(arms.group_names):
        m[f"share.{g}"] = total[j] / max(n, 1)
        m[f"share_end.{g}"] = end[j] / max(end.sum(), 1.0)
    tail = {key: float(v[-n_end:].sum()) for key, v in acc.sums.items()}
    m["regret_end_per_1k"] = (
        (tail["oracle"] - tail["value_true"]) * 1000.0 / max(tail["impressions"], 1.0)
    )
    m.update(_regret_split(acc, arms.group_names, n_end))
    return m


def _regret_split(acc: _Acc, group_names: tuple[str, ...], n_end: int) -> dict[str, float]:
    """Where the regret is, per 1,000 impressions, over the cell and its last ``n_end``
    bins: ``within.<g>`` where group ``g`` held the best candidate and was served (the
    wrong one of its arms: a merchant's own quality), ``missed.<g>`` where ``g`` held it
    and another group was served (the group's level misjudged). The parts sum to
    ``regret_per_1k`` (``regret_end_per_1k`` over the last bins: both summed apart from
    this split, from the oracle's and the chosen candidates' values); a group of one arm
    has no ``within`` regret."""
    out: dict[str, float] = {}
    n_all = max(float(acc.sums["impressions"].sum()), 1.0)
    n_tail = max(float(acc.sums["impressions"][-n_end:].sum()), 1.0)
    for prefix, split, imps in (
        ("regret_per_1k", acc.regret_split.sum(axis=0), n_all),
        ("regret_end_per_1k", acc.regret_split[-n_end:].sum(axis=0), n_tail),
    ):
        for j, g in enumerate(group_names):
            out[f"{prefix}.within.{g}"] = split[j, 0] * 1000.0 / imps
            out[f"{prefix}.missed.{g}"] = split[j, 1] * 1000.0 / imps
    return out


def _curves(
    acc: _Acc, arms: ScenarioArms, tracks: list[FloorTrack], start_s: float, span: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    steps = np.arange(acc.n_bins)
    imp = np.maximum(acc.sums["impressions"], 1.0)
    out = {
        "curve.cum_regret": np.cumsum(acc.sums["oracle"] - acc.sums["value_true"]),
        "curve.cum_value": np.cumsum(acc.sums["value_true"]),
        "curve.value_per_1k": acc.sums["value_true"] / imp * 1000.0,
    }
    for j, g in enumerate(arms.group_names):
        out[f"curve.share.{g}"] = acc.group_counts[:, j] / imp
    mids = start_s + (steps + 0.5) / acc.n_bins * span
    for tr in tracks:
        out[f"curve.floor.{tr.name}"] = tr.schedule_at(mids)
    return {key: (steps, np.asarray(v, dtype=np.float64)) for key, v in out.items()}
