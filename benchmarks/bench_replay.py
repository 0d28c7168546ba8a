"""Hand-run benchmark of offline replay, the Ray grid runner and MLflow cell logging.

Not a test: it prints one markdown table per section (see benchmarks/README.md).

    python benchmarks/bench_replay.py [--quick] [--only replay|nonstationary|ray|mlflow]
        [--tree CHECKOUT]

``--tree`` names the checkout whose package is timed (put it on ``PYTHONPATH``; the
script refuses to run another): ``BENCH=bench_replay.py benchmarks/bench_engine_core.sh
BASE --only nonstationary`` alternates a base commit's worktree and this checkout.
"""

from __future__ import annotations

import os

# One numba / BLAS thread here too, as in every Ray worker: rates are per core, and the
# sequential runner is compared with Ray workers on equal terms.
os.environ.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

import argparse
import datetime
import importlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import allocator
from allocator import ArmRegistry, Engine
from allocator.config import BetaBernoulliConfig, LinearGaussianConfig
from allocator.constraints import ConstraintSet
from allocator.launch.runner import RayRunner, SequentialRunner, TaskResult
from allocator.launch.tracking import CellRecord, LaunchTracker
from allocator.policies import make_policy
from allocator.replay import (
    LoggedData,
    RidgeRewardModel,
    evaluate,
    replay_learning_policy,
    replay_nonstationary,
)
from allocator.replay.confidence import dr_sequence, drifting_mean_interval
from allocator.replay.evaluate import target_distribution

SCENARIO = Path(__file__).resolve().parent.parent / "configs" / "wechat_entry.yaml"
STRATEGY = "contextual_ts"  # the scenario strategy whose seeds make the Ray grid
N_TASKS = 8
#: impressions of a start-up cell: enough to import the library and load every kernel the
#: real cells call from numba's cache in each worker, too few to count as work
WARM_IMPRESSIONS = 200


def header(title: str) -> str:
    """Title, date, machine; the load average tells whether others shared the CPUs."""
    return (
        f"### {title}\n\n{datetime.date.today().isoformat()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}; load average at the end "
        f"(1 / 5 min): {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f}\n"
    )


def table(cols: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def note(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def cpu_timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Result, wall s and this process's CPU s: on a shared machine the CPU time still
    gives the per-core rate of single-threaded work."""
    c0 = time.process_time()
    out, wall = timed(fn, *args)
    return out, wall, time.process_time() - c0


# ------------------------------------------------------------------------------- replay
def uniform_log(k: int, n: int, d: int | None, seed: int) -> LoggedData:
    """n rounds logged uniformly over all k arms; Bernoulli rewards (logistic in x if d)."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, k, n)
    x = None
    if d is None:
        mean = rng.beta(2.0, 20.0, k)[actions]
    else:
        x = rng.normal(size=(n, d))
        theta = rng.normal(0.0, 1.0 / np.sqrt(d), (k, d))
        bias = rng.normal(-2.0, 0.5, k)
        mean = 1.0 / (1.0 + np.exp(-(bias[actions] + np.einsum("nd,nd->n", x, theta[actions]))))
    return LoggedData(
        arm_ids=tuple(f"arm:{a}" for a in range(k)),
        actions=actions.astype(np.int64),
        rewards=(rng.random(n) < mean).astype(np.float64),
        pscores=np.full(n, 1.0 / k),
        contexts=x,
    )


def fresh_policy(cfg: Any, k: int, seed: int = 0) -> Any:
    registry = ArmRegistry(capacity=max(16, k))
    registry.add([f"arm:{a}" for a in range(k)], "g")
    return make_policy(cfg, registry, seed=seed)


def trained_policy(cfg: Any, data: LoggedData) -> Any:
    """A frozen target: the policy taught on the first half of the log."""
    policy = fresh_policy(cfg, data.n_arms, seed=1)
    half = data.take(0, data.n_rounds // 2)
    policy.update_batch(half.actions, half.rewards, half.contexts)
    policy.refresh()
    return policy


def bare_decide_loop(policy: Any, data: LoggedData) -> None:
    """The baseline: one ``decide`` per logged round, no replay bookkeeping, no learning."""
    cand = np.arange(data.n_arms, dtype=np.int64)
    x = data.contexts
    for i in range(data.n_rounds):
        policy.decide(cand, None if x is None else x[i])


def bench_replay(quick: bool) -> str:
    n_replay, n_ope = (20_000, 10_000) if quick else (200_000, 100_000)
    cases = [
        ("Beta TS K=10", BetaBernoulliConfig(), 10, None),
        ("Beta TS K=100", BetaBernoulliConfig(), 100, None),
        ("linear TS d=16 K=20", LinearGaussianConfig(n_features=16), 20, 16),
    ]
    for _, cfg, k, d in cases:  # compile, or load from numba's cache, before timing
        small = uniform_log(k, 2_000, d, 99)
        replay_learning_policy(fresh_policy(cfg, k), small, np.random.default_rng(0))
        evaluate(small, trained_policy(cfg, small), reward_model="ridge", n_boot=20,
                 rng=np.random.default_rng(0))  # fmt: skip
    rows = []
    for label, cfg, k, d in cases:
        data = uniform_log(k, n_replay, d, 0)
        policy = fresh_policy(cfg, k)
        res, sec, cpu = cpu_timed(replay_learning_policy, policy, data, np.random.default_rng(0))
        _, bare = timed(bare_decide_loop, fresh_policy(cfg, k), data)
        rows.append([
            "rejection replay (learning)", label, f"{data.n_rounds:,}", f"{sec:.2f}",
            f"{data.n_rounds / sec:,.0f}", f"{data.n_rounds / cpu:,.0f}", f"{res.n_accepted:,}",
            f"{res.n_accepted / sec:,.0f}",
            f"{1e6 * sec / data.n_rounds:.1f} µs/round; {sec / bare:.2f}× a bare decide loop",
            f"value {res.value:.4f}",
        ])  # fmt: skip
        note(f"replay {label}: {sec:.1f} s")
    for label, cfg, k, d in cases:
        data = uniform_log(k, n_ope, d, 1)
        target = trained_policy(cfg, data)
        _, t_dist = timed(target_distribution, target, data)
        model, t_fit = timed(RidgeRewardModel().fit, data, np.random.default_rng(0))
        _, t_pred = timed(model.predict_candidates, data)
        t_ridge = t_fit + t_pred
        rng = np.random.default_rng(0)
        ev, sec = timed(evaluate, data, target, reward_model="ridge", n_boot=200, rng=rng)
        rows.append([
            "OPE of frozen target (5 est., 200 boot)", label, f"{data.n_rounds:,}", f"{sec:.2f}",
            f"{data.n_rounds / sec:,.0f}", "–", "–", "–",
            f"target dist {t_dist:.2f} s, ridge fit+predict {t_ridge:.2f} s, "
            f"estimators + bootstrap {sec - t_dist - t_ridge:.2f} s",
            f"DR {ev['dr'].value:.4f}",
        ])  # fmt: skip
        note(f"OPE {label}: {sec:.1f} s")
    cols = ["what", "policy", "logged rows", "s", "rows/s", "rows/CPU s", "accepted", "accepted/s",
            "detail", "estimate"]  # fmt: skip
    return header("Replay throughput (one core)") + "\n" + table(cols, rows)


# ------------------------------------------------------------------------ nonstationary
T0 = 1_759_276_800.0  # 2025-10-01T00:00:00Z
DAY = 86_400.0
CATEGORIES = np.array(["apparel", "grocery", "food"])


def october(start_value: float, **shape: Any) -> dict[str, Any]:
    """A schedule over October 2025 (the benchmark log's 30 days)."""
    return {"start": "2025-10-01T00:00:00Z", "end": "2025-10-31T00:00:00Z",
            "start_value": start_value, **shape}  # fmt: skip


CONTRACTS = {"window": 1000, "constraints": [
    {"name": "p0_floor", "kind": "floor", "target": {"group": "p0"},
     "scope": {"category": ["apparel", "grocery"]},
     "schedule": october(0.25, end_value=0.05, shape="linear")},
    {"name": "p1_cap", "kind": "cap", "target": {"group": "p1"}, "schedule": october(0.2)},
    {"name": "tilt", "kind": "tilt", "target": {"group": "mini_shop"}, "schedule": october(1.3)},
]}  # fmt: skip


def groups_of(k: int) -> list[str]:
    """Arms 0 and 1 are partners p0 and p1, the others Mini Shop merchants."""
    return ["p0", "p1"] + ["mini_shop"] * (k - 2)


def skewed_log(k: int, n: int, d: int | None, seed: int, lists: bool = True) -> LoggedData:
    """n rounds over all k arms from a fixed skewed logger (half uniform, half a Dirichlet
    favourite), every candidate's probability logged (``lists``; else no candidate lists:
    every arm a candidate); 30 days of timestamps and a category attribute per round, so
    contracts can be replayed on it."""
    data = uniform_log(k, n, d, seed)
    rng = np.random.default_rng(seed + 1)
    probs = 0.5 / k + 0.5 * rng.dirichlet(np.full(k, 0.5))
    actions = rng.choice(k, n, p=probs).astype(np.int64)
    csr: dict[str, Any] = {}
    if lists:
        csr = {"cand_ptr": np.arange(n + 1, dtype=np.int64) * k,
               "cand_idx": np.tile(np.arange(k, dtype=np.int64), n),
               "cand_prob": np.tile(probs, n)}  # fmt: skip
    return LoggedData(
        arm_ids=data.arm_ids, actions=actions, rewards=data.rewards, pscores=probs[actions],
        arm_groups=tuple(groups_of(k)), contexts=data.contexts,
        timestamps=T0 + np.sort(rng.random(n)) * 30 * DAY,
        attrs={"category": CATEGORIES[rng.integers(0, 3, n)]}, **csr,
    )  # fmt: skip


def fresh_engine(cfg: Any, k: int, constrained: bool) -> Engine:
    registry = ArmRegistry.build([f"arm:{a}" for a in range(k)], groups_of(k))
    spec = ConstraintSet.model_validate(CONTRACTS) if constrained else None
    return Engine(make_policy(cfg, registry, seed=0), spec)


def bare_engine_loop(engine: Engine, data: LoggedData) -> None:
    """The baseline: one ``Engine.decide`` per logged round (contracts, attributes and time
    included when the engine has contracts), no replay bookkeeping, no learning."""
    cand = np.arange(data.n_arms, dtype=np.int64)
    x, t = data.contexts, data.timestamps
    assert t is not None and data.attrs is not None
    cats = data.attrs["category"]
    for i in range(data.n_rounds):
        engine.decide(cand, None if x is None else x[i], {"category": str(cats[i])}, float(t[i]))


def bench_nonstationary(quick: bool) -> str:
    n_rows = 20_000 if quick else 200_000
    cases = [
        ("Beta TS K=10", BetaBernoulliConfig(), 10, None, False, n_rows),
        ("linear TS d=16 K=20", LinearGaussianConfig(n_features=16), 20, 16, False, n_rows),
        ("constrained linear TS d=16 K=20 (floor, cap, tilt)",
         LinearGaussianConfig(n_features=16), 20, 16, True, n_rows // 4),
    ]  # fmt: skip
    for _, cfg, k, d, con, _ in cases:  # compile, or load from numba's cache, before timing
        small = skewed_log(k, 2_000, d, 99)
        replay_nonstationary(fresh_engine(cfg, k, con), small, np.random.default_rng(0))
        bare_engine_loop(fresh_engine(cfg, k, con), small.take(0, 100))
    rows = []
    for label, cfg, k, d, con, n in cases:
        data = skewed_log(k, n, d, 0)
        rng = np.random.default_rng(0)
        res, sec, cpu = cpu_timed(replay_nonstationary, fresh_engine(cfg, k, con), data, rng)
        _, bare = timed(bare_engine_loop, fresh_engine(cfg, k, con), data)
        rows.append([
            "nonstationary replay (learning, DR)", label, f"{n:,}", f"{sec:.2f}",
            f"{n / sec:,.0f}", f"{n / cpu:,.0f}", f"{res.n_accepted:,} ({res.acceptance_rate:.2f})",
            f"{n / bare:,.0f}", f"{bare / sec:.2f}×",
            f"{res.value:.4f} [{res.low:.4f}, {res.high:.4f}]",
        ])  # fmt: skip
        note(f"nonstationary {label}: {sec:.1f} s (bare loop {bare:.1f} s)")
    n_terms = 200_000 if quick else 2_000_000
    rng = np.random.default_rng(3)
    terms = np.clip(rng.normal(0.3, 0.5, n_terms), -2.0, 3.0)
    weights = rng.uniform(0.2, 1.0, n_terms)
    _, t_cs = timed(dr_sequence, terms, -2.0, 3.0, 0.05)
    _, t_eb = timed(drifting_mean_interval, terms, -2.0, 3.0, 0.05, weights, n_terms)
    for what, sec in (
        ("confidence sequence for IPS / DR (betting)", t_cs),
        ("drifting-mean interval of a replay (empirical Bernstein)", t_eb),
    ):
        rows.append([what, "terms given", f"{n_terms:,}", f"{sec:.2f}", f"{n_terms / sec:,.0f}",
                     "–", "–", "–", "–", "–"])  # fmt: skip
    cols = ["what", "policy", "logged rows", "s", "rows/s", "rows/CPU s", "accepted (rate)",
            "bare decide loop rows/s", "replay / bare (rows/s)", "value [interval]"]  # fmt: skip
    return header("Nonstationary replay and intervals (one core)") + "\n" + table(cols, rows)


# ---------------------------------------------------------------------------------- ray
def trivial(shared: Any, task: Any) -> Any:
    return task


def scenario_grid(n_impressions: int) -> tuple[Any, list[Any], list[Any]]:
    """Shared world + N_TASKS cells of one learning strategy (seeds 1..N), no OPE check,
    and the same cells at WARM_IMPRESSIONS (the start-up grid that loads the library)."""
    from allocator.scenario.build import grid_cells
    from allocator.scenario.config import PolicySpec, load_scenario
    from allocator.scenario.simulate import Shared
    from allocator.scenario.world import World

    sc = load_scenario(SCENARIO)
    spec = next((s for s in sc.strategies if s.name == STRATEGY), None)
    if spec is None:
        spec = next(s for s in sc.strategies if isinstance(s, PolicySpec))
        note(f"no strategy {STRATEGY!r} in {SCENARIO.name}: using {spec.name!r}")
    exp = sc.experiment.model_copy(
        update={"seeds": list(range(1, N_TASKS + 1)), "ope_target": None}
    )
    sc = sc.model_copy(update={"experiment": exp, "strategies": [spec]})
    world = World(sc.world, seed=exp.world_seed)
    cells = grid_cells(sc, world, n_impressions)[:N_TASKS]
    return Shared(world, sc), cells, grid_cells(sc, world, WARM_IMPRESSIONS)[:N_TASKS]


def bench_ray(quick: bool, cell_impressions: int | None = None) -> str:
    from allocator.scenario.simulate import run_cell

    n_impr = cell_impressions or (5_000 if quick else 50_000)
    if not SCENARIO.exists():
        return header("Ray scaling") + f"\nskipped: {SCENARIO} does not exist"
    shared, cells, warm = scenario_grid(n_impr)
    SequentialRunner(progress=False).run(run_cell, cells[:1], shared)  # compile in the driver
    _, t_import = timed(importlib.import_module, "ray")
    strategy = cells[0].name.split("/")[0]
    note(f"grid: {len(cells)} cells of {strategy}, {n_impr:,} impressions each")

    def run(runner: Any, fn: Any, tasks: list[Any]) -> tuple[list[TaskResult], float]:
        out: tuple[list[TaskResult], float] = timed(runner.run, fn, tasks, shared)
        return out

    ref, t_seq = run(SequentialRunner(progress=False), run_cell, cells)
    cpu_seq = sum(r.cpu_seconds for r in ref)
    rows = [["sequential (this process)", "1", f"{t_seq:.1f}",
             f"{sum(r.seconds for r in ref):.1f}", f"{cpu_seq:.1f}", f"{cpu_seq / t_seq:.2f}",
             "–", "–", "1.00×", "–"]]  # fmt: skip
    net: dict[int, tuple[float, float, float]] = {}
    for cpus in (1, 2):
        # Start-up grids, before and after the real one (Ray's start-up is noisy here): a
        # fresh local Ray each; trivial tasks time Ray alone, warm ones (WARM_IMPRESSIONS
        # cells) also each worker's import of the library and its kernels from the cache,
        # which the real grid's first task on every worker pays too.
        up = [run(RayRunner(num_cpus=cpus, progress=False), trivial, list(range(N_TASKS)))[1]]
        boot = [run(RayRunner(num_cpus=cpus, progress=False), run_cell, warm)[1]]
        res, wall = run(RayRunner(num_cpus=cpus, progress=False), run_cell, cells)
        boot.append(run(RayRunner(num_cpus=cpus, progress=False), run_cell, warm)[1])
        up.append(run(RayRunner(num_cpus=cpus, progress=False), trivial, list(range(N_TASKS)))[1])
        ok = all(r.ok for r in res)
        same = ok and all(a.value.metrics == b.value.metrics for a, b in zip(ref, res, strict=True))
        if not ok:
            note(next(r.error for r in res if not r.ok) or "")
        net[cpus] = (wall, wall - float(np.mean(up)), wall - float(np.mean(boot)))
        cpu = sum(r.cpu_seconds for r in res)
        rows.append([
            f"RayRunner(num_cpus={cpus})", str(cpus), f"{wall:.1f}",
            f"{sum(r.seconds for r in res):.1f}", f"{cpu:.1f}", f"{cpu / wall:.2f}",
            f"{up[0]:.1f} / {up[1]:.1f}", f"{boot[0]:.1f} / {boot[1]:.1f}",
            f"{t_seq / wall:.2f}×", "yes" if same else "NO",
        ])  # fmt: skip
        note(
            f"ray {cpus} CPU(s): {wall:.1f} s (start-up grids {up[0]:.1f}, {up[1]:.1f} s; "
            f"warm {boot[0]:.1f}, {boot[1]:.1f} s)"
        )
    cols = ["runner", "workers", "wall s", "Σ task s (inside tasks)", "Σ task CPU s",
            "Σ task CPU / wall (cores busy)", "start-up s, before / after (8 trivial tasks)",
            f"warm start-up s, before / after (8 cells of {WARM_IMPRESSIONS})",
            "speed-up vs sequential",
            "metrics = sequential"]  # fmt: skip
    return (
        header(f"Ray scaling: {len(cells)} cells of {strategy}, {n_impr:,} impressions each")
        + "\n"
        + table(cols, rows)
        + f"\n\nspeed-up 2 vs 1 workers: {net[1][0] / net[2][0]:.2f}× wall, "
        f"{net[1][1] / net[2][1]:.2f}× net of Ray's start-up (wall − mean trivial grid), "
        f"{net[1][2] / net[2][2]:.2f}× net of the warm start-up (wall − mean warm grid: "
        "Ray, the library's import and its kernels in every worker). "
        f"import ray (once per process, not in the table): {t_import:.1f} s"
    )


# ------------------------------------------------------------------------------- mlflow
def cell_record(i: int, rng: np.random.Generator) -> CellRecord:
    """A cell record of the size the scenario grid logs: 60 params, 80 metrics, 15 curves."""
    params = {f"engine.policy.param_{j:02d}": f"{rng.random():.6f}" for j in range(60)}
    metrics = {f"metric_{j:02d}": float(rng.random()) for j in range(80)}
    steps = np.arange(60)
    curves = {f"curve_{j:02d}": (steps, rng.random(60)) for j in range(15)}
    coords = {"strategy": "contextual_ts", "kind": "policy", "seed": str(i), "contracts": "none"}
    return CellRecord(f"contextual_ts/seed={i}", coords, params, metrics, curves)


def bench_mlflow(quick: bool) -> str:
    n = 5 if quick else 20
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        _, t_import = timed(importlib.import_module, "mlflow.tracking")
        tracker, t_new = timed(LaunchTracker, "bench", tracking_uri=uri)
        _, t_again = timed(LaunchTracker, "bench", tracking_uri=uri)
        tracker.log_cell(cell_record(0, rng))  # first write: lazy imports, warm caches
        records = [cell_record(i, rng) for i in range(1, n + 1)]
        ms = np.array([1e3 * timed(tracker.log_cell, r)[1] for r in records])
    rows = [
        ["import mlflow.tracking (once per process)", f"{1e3 * t_import:,.0f}"],
        ["LaunchTracker() on a new sqlite store (creates the tables)", f"{1e3 * t_new:,.0f}"],
        ["LaunchTracker() on the existing store", f"{1e3 * t_again:,.0f}"],
        [f"log_cell, mean of {n} (60 params, 80 metrics, 15 curves × 60 steps)",
         f"{ms.mean():,.0f}"],
        ["log_cell, min / median / max",
         f"{ms.min():,.0f} / {np.median(ms):,.0f} / {ms.max():,.0f}"],
    ]  # fmt: skip
    return header("MLflow logging (sqlite store)") + "\n" + table(["what", "ms"], rows)


SECTIONS = {
    "replay": bench_replay,
    "nonstationary": bench_nonstationary,
    "ray": bench_ray,
    "mlflow": bench_mlflow,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", choices=list(SECTIONS), help="run one section")
    parser.add_argument("--cell-impressions", type=int, default=None,
                        help="impressions per Ray-scaling cell (default 50,000)")  # fmt: skip
    parser.add_argument("--tree", type=Path, default=None,
                        help="the checkout on PYTHONPATH whose package is timed")  # fmt: skip
    args = parser.parse_args()
    if args.tree is not None:
        where = Path(allocator.__file__).resolve()
        if not where.is_relative_to(args.tree.resolve()):
            parser.error(f"allocator is imported from {where}, not from --tree {args.tree}")
        print(f"tree: {args.tree.resolve()}\n", flush=True)
    for name in [args.only] if args.only else list(SECTIONS):
        if name == "ray":
            print(bench_ray(args.quick, args.cell_impressions), end="\n\n", flush=True)
        else:
            print(SECTIONS[name](args.quick), end="\n\n", flush=True)


if __name__ == "__main__":
    main()
