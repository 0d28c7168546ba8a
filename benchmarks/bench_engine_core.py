"""Engine core benchmark, runnable against any checkout (before/after an engine change).

    python benchmarks/bench_engine_core.py --tree /path/to/checkout [--merchants 1000000]

``--tree`` is put first on sys.path, so the same script times an old worktree and the
current code. Cases (each a median of ``--repeats`` runs after a warm-up):

1. beta_bernoulli, K=10 (2 partners + 8 merchants), floor + cap + tilt on:
   ``Allocator.decide`` p50/p99 µs (string ids) and ``decide_many`` of 1,000 requests: decisions/s.
2. shared_linear, 200 candidates among ``--merchants`` arms (8 context, 4 arm features),
   contracts on, candidates as int64 registry indices: the same three figures.
3. The issue-15 target workload (``--only target``): shared_linear with d = 16 weights (8
   context × 2 arm features), 200 candidates (3 partners + 197 merchants) of ``--merchants``
   arms as int64 registry indices (``--only target_ids``: as lists of id strings, the
   registry's own str objects, scattered over the catalogue's memory; ``--only
   target_fresh_ids``: as new str objects per request, as a deserialised request brings
   them, so the ids of one request sit together in memory), three
   partner floors + the Mini Shop tilt + a cold-start floor, the decision log on (a temporary
   directory), ``serving.refresh_every_s = 5`` with one request per simulated second:
   ``decide_many`` of 1,000 requests (decisions per wall and per process CPU second) and
   single ``decide`` p50/p99.
4. Scenario ``configs/wechat_entry.yaml``: one cell of ``contextual_ts_protected`` and of its
   unconstrained twin ``contextual_ts``: seconds each and the ratio protected/unprotected.

Prints a markdown table and one ``JSON {...}`` line. See bench_engine_core.sh for the
before/after driver.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

T0 = 1_760_000_000
WINDOW = {"start": "2025-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
PARTNERS = ("taobao", "douyin")


def contracts() -> dict[str, Any]:
    return {"constraints": [
        {"name": "taobao_floor", "kind": "floor", "target": {"group": "taobao"},
         "schedule": {**WINDOW, "start_value": 0.2}},
        {"name": "douyin_cap", "kind": "cap", "target": {"group": "douyin"},
         "schedule": {**WINDOW, "start_value": 0.6}},
        {"name": "mini_shop_tilt", "kind": "tilt", "target": {"group": "mini_shop"},
         "schedule": {**WINDOW, "start_value": 1.5}},
    ]}  # fmt: skip


TARGET_PARTNERS = ("taobao", "douyin", "pinduoduo")


def target_config(n_merchants: int, rng: Any) -> dict[str, Any]:
    """The issue-15 workload: three partner floors, the tilt and a cold-start floor."""
    arms: list[dict[str, Any]] = [{"id": p, "group": p} for p in TARGET_PARTNERS]
    arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(n_merchants)]
    feats = rng.random((len(arms), 2)).tolist()
    for arm, f in zip(arms, feats, strict=True):
        arm["features"] = f
    floors = [
        {"name": f"{p}_floor", "kind": "floor", "target": {"group": p},
         "schedule": {**WINDOW, "start_value": 0.05}}
        for p in TARGET_PARTNERS
    ]  # fmt: skip
    return {
        "engine": {"policy": {"kind": "shared_linear", "n_context_features": 8,
                              "n_arm_features": 2, "max_candidates": 256},
                   "objective": {"order": 1.0, "gmv": 0.01,
                                 "take_rates": {p: 0.03 for p in TARGET_PARTNERS}}},
        "arms": arms,
        "constraints": {"constraints": [
            *floors,
            {"name": "mini_shop_tilt", "kind": "tilt", "target": {"group": "mini_shop"},
             "schedule": {**WINDOW, "start_value": 1.5}},
            {"name": "cold_start", "kind": "floor",
             "target": {"cold_in_group": "mini_shop", "n_min": 30, "max_age_s": 1209600},
             "schedule": {**WINDOW, "start_value": 0.1}},
        ]},
        "serving": {"reward_wait_s": 600.0, "refresh_every_s": 5.0},
    }  # fmt: skip


def config_dict(kind: str, n_merchants: int, rng: Any = None) -> dict[str, Any]:
    policy: dict[str, Any] = {"kind": kind}
    arms: list[dict[str, Any]] = [{"id": p, "group": p} for p in PARTNERS]
    arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(n_merchants)]
    if kind == "shared_linear":
        policy.update(n_context_features=8, n_arm_features=4)
        feats = rng.random((len(arms), 4)).tolist()
        for arm, f in zip(arms, feats, strict=True):
            arm["features"] = f
    return {
        "engine": {"policy": policy,
                   "objective": {"order": 1.0, "gmv": 0.0 if kind == "beta_bernoulli" else 0.01,
                                 "take_rates": {"taobao": 0.03, "douyin": 0.04,
                                                "mini_shop": 0.05}}},
        "arms": arms,
        "constraints": contracts(),
        "serving": {"reward_wait_s": 600.0},
    }  # fmt: skip


def tree_args(description: str, sets: bool = False) -> argparse.Namespace:
    """``--tree`` (put first on sys.path), ``--merchants`` and ``--repeats`` (and with
    ``sets``, ``--sets``: distinct candidate sets): the options of the scripts that time
    one stage of the target case in one checkout."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--tree", required=True, type=Path)
    ap.add_argument("--merchants", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    if sets:
        ap.add_argument("--sets", type=int, default=64)
    args = ap.parse_args()
    args.tree = args.tree.resolve()
    sys.path.insert(0, str(args.tree))
    return args


def target_allocator(tree: Path, n_merchants: int, log_prefix: str, **kwargs: Any) -> Any:
    """(allocator, rng): the target case over ``n_merchants``, warmed up, logging to a
    fresh temporary directory, built from ``tree``'s package (checked) by a generator that
    the caller goes on drawing requests from."""
    import tempfile

    import numpy as np

    import allocator
    from allocator.serving import AllocatorConfig

    assert Path(allocator.__file__).resolve().is_relative_to(tree), allocator.__file__
    rng = np.random.default_rng(0)
    cfg = AllocatorConfig.model_validate(target_config(n_merchants, rng))
    alloc = allocator.Allocator(cfg, seed=1, log_dir=tempfile.mkdtemp(prefix=log_prefix), **kwargs)
    alloc.warmup()
    return alloc, rng


def target_stream(
    alloc: Any, rng: Any, n_merchants: int, as_ids: bool = False, fresh: bool = False
) -> Any:
    """(request maker, clock) of the target case's stream on ``alloc`` (built by
    :func:`target_allocator`): 64 candidate sets of the 3 partners and 197 merchants (as
    registry indices, or with ``as_ids`` lists of id strings: the serving layer's form;
    with ``fresh`` new str objects per request, as a deserialised request brings), each
    request one event-second after the last; 2,000 decisions are made and every third one
    is fed back, so refreshes have updates to fold in."""
    import numpy as np

    pool = [np.concatenate([np.arange(3), 3 + rng.choice(n_merchants, size=197, replace=False)])
            for _ in range(64)]  # fmt: skip
    if as_ids:
        ids = alloc.registry.all_ids()
        pool = [[ids[i] for i in p] for p in pool]
    ctx_pool = [rng.standard_normal(8) for _ in range(64)]
    clock = Clock()

    def req(c: Clock) -> dict[str, Any]:
        k = c.i % 64
        cands = [i.encode().decode() for i in pool[k]] if fresh else pool[k]
        return {"candidates": cands, "context": ctx_pool[(k * 7) % 64],
                "timestamp": c.next(), "attrs": {"slot": "entry"}}  # fmt: skip

    for d in alloc.decide_many([req(clock) for _ in range(2000)]).decision_ids[::3]:
        alloc.update(d, {"order": 1.0, "gmv": 10.0})
    return req, clock


class Clock:
    """Strictly increasing request timestamps T0 + i shared by every call of a case."""

    def __init__(self) -> None:
        self.i = 0

    def next(self) -> float:
        self.i += 1
        return float(T0 + self.i)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def time_decide(
    alloc: Any, make_req: Any, clock: Clock, n: int, repeats: int
) -> tuple[float, float]:
    """(p50, p99) µs of single decide calls: per repeat n timed calls; medians over repeats."""
    for _ in range(max(200, n // 10)):  # warm-up
        alloc.decide(**make_req(clock))
    p50s, p99s = [], []
    pc = time.perf_counter_ns
    for _ in range(repeats):
        reqs = [make_req(clock) for _ in range(n)]
        lat = []
        gc.disable()
        for r in reqs:
            t = pc()
            alloc.decide(**r)
            lat.append((pc() - t) / 1e3)
        gc.enable()
        p50s.append(pct(lat, 0.50))
        p99s.append(pct(lat, 0.99))
    return statistics.median(p50s), statistics.median(p99s)


def time_many(
    alloc: Any, make_req: Any, clock: Clock, batch: int, calls: int, repeats: int
) -> tuple[float, float, float]:
    """decisions/s of decide_many(batch requests), per wall second and per CPU second of the
    process (every thread: the log writer's included; on a loaded machine the CPU figure is
    the steadier one): medians over repeats of `calls` calls, and the best CPU rate (the
    least disturbed repeat)."""
    alloc.decide_many([make_req(clock) for _ in range(batch)])  # warm-up
    alloc.decide_many([make_req(clock) for _ in range(batch)])
    rates, cpu_rates = [], []
    for _ in range(repeats):
        batches = [[make_req(clock) for _ in range(batch)] for _ in range(calls)]
        gc.disable()
        t, c = time.perf_counter(), time.process_time()
        for b in batches:
            out = alloc.decide_many(b)
            assert len(out) == batch
        dt, dc = time.perf_counter() - t, time.process_time() - c
        gc.enable()
        rates.append(batch * calls / dt)
        cpu_rates.append(batch * calls / dc)
    return statistics.median(rates), statistics.median(cpu_rates), max(cpu_rates)


def case_beta(allocator: Any, AllocatorConfig: Any, args: argparse.Namespace) -> dict[str, Any]:
    cfg = AllocatorConfig.model_validate(config_dict("beta_bernoulli", 8))
    alloc = allocator.Allocator(cfg, seed=1)
    alloc.warmup()
    ids = [*PARTNERS, *(f"merchant:{i}" for i in range(8))]
    clock = Clock()

    def req(c: Clock) -> dict[str, Any]:
        return {"candidates": ids, "timestamp": c.next()}

    p50, p99 = time_decide(alloc, req, clock, args.n_decide, args.repeats)
    rate, cpu, _ = time_many(alloc, req, clock, 1000, args.many_calls, args.repeats)
    return {"decide_p50_us": p50, "decide_p99_us": p99, "many_per_s": rate, "many_per_cpu_s": cpu}


def case_linear(allocator: Any, AllocatorConfig: Any, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    n = args.merchants
    t = time.perf_counter()
    data = config_dict("shared_linear", n, rng)
    cfg = AllocatorConfig.model_validate(data)
    del data
    alloc = allocator.Allocator(cfg, seed=1)
    alloc.warmup()
    build_s = time.perf_counter() - t
    # 64 candidate lists: the 2 partners + 198 distinct random merchants, as registry indices
    ids_pool = []
    for _ in range(64):
        m = rng.choice(n, size=198, replace=False)
        ids_pool.append([*PARTNERS, *(f"merchant:{j}" for j in m)])
    idx_pool = [np.asarray(alloc.registry.lookup(ids), dtype=np.int64) for ids in ids_pool]
    ctx_pool = [rng.standard_normal(8) for _ in range(64)]
    clock = Clock()

    def req(c: Clock) -> dict[str, Any]:
        k = c.i % 64
        return {"candidates": idx_pool[k], "context": ctx_pool[(k * 7) % 64], "timestamp": c.next()}

    p50, p99 = time_decide(alloc, req, clock, args.n_decide, args.repeats)
    rate, cpu, _ = time_many(alloc, req, clock, 1000, args.many_calls, args.repeats)
    return {"merchants": n, "build_s": build_s, "decide_p50_us": p50, "decide_p99_us": p99,
            "many_per_s": rate, "many_per_cpu_s": cpu}  # fmt: skip


def case_target(
    allocator: Any, AllocatorConfig: Any, args: argparse.Namespace, as_ids: bool = False,
    fresh: bool = False,
) -> dict[str, Any]:  # fmt: skip
    import tempfile

    import numpy as np

    rng = np.random.default_rng(0)
    n = args.merchants
    t = time.perf_counter()
    cfg = AllocatorConfig.model_validate(target_config(n, rng))
    log_dir = tempfile.mkdtemp(prefix="bench-target-log-")
    alloc = allocator.Allocator(cfg, seed=1, log_dir=log_dir)
    alloc.warmup()
    build_s = time.perf_counter() - t
    req, clock = target_stream(alloc, rng, n, as_ids, fresh)
    p50, p99 = time_decide(alloc, req, clock, args.n_decide, args.repeats)
    rate, cpu, best = time_many(alloc, req, clock, 1000, args.many_calls, args.repeats)
    alloc.close()
    return {"merchants": n, "build_s": build_s, "decide_p50_us": p50, "decide_p99_us": p99,
            "many_per_s": rate, "many_per_cpu_s": cpu, "many_per_cpu_s_best": best}  # fmt: skip


def case_scenario(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    # the simulator moved from a top-level ``experiments`` package into the library
    pkg = "allocator.scenario" if (tree / "allocator" / "scenario").is_dir() else "experiments"
    grid_cells = importlib.import_module(f"{pkg}.build").grid_cells
    load_scenario = importlib.import_module(f"{pkg}.config").load_scenario
    simulate = importlib.import_module(f"{pkg}.simulate")
    Shared, run_cell = simulate.Shared, simulate.run_cell
    World = importlib.import_module(f"{pkg}.world").World

    scenario = load_scenario(tree / "configs" / "wechat_entry.yaml")
    world = World(scenario.world, seed=scenario.experiment.world_seed)
    shared = Shared(world, scenario)
    names = {"protected": args.protected, "unprotected": args.unprotected}

    def cells(n_imp: int) -> dict[str, Any]:
        out = {}
        for c in grid_cells(scenario, world, n_imp):
            for key, strat in names.items():
                if c.strategy == strat and key not in out:
                    out[key] = c
        return out

    for c in cells(args.warm_impressions).values():  # warm-up: compile every kernel
        run_cell(shared, c)
    tasks = cells(args.impressions)
    secs: dict[str, list[float]] = {"protected": [], "unprotected": []}
    for _ in range(args.scenario_repeats):
        for key in ("unprotected", "protected"):
            gc.collect()
            t = time.perf_counter()
            run_cell(shared, tasks[key])
            secs[key].append(time.perf_counter() - t)
    p = statistics.median(secs["protected"])
    u = statistics.median(secs["unprotected"])
    return {"impressions": args.impressions, "protected_s": p, "unprotected_s": u,
            "ratio": p / u, "runs": secs}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True, type=Path)
    ap.add_argument("--label", default=None)
    ap.add_argument("--merchants", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-decide", type=int, default=2000)
    ap.add_argument("--many-calls", type=int, default=3)
    ap.add_argument("--impressions", type=int, default=200_000)
    ap.add_argument("--warm-impressions", type=int, default=20_000)
    ap.add_argument("--scenario-repeats", type=int, default=1)
    ap.add_argument("--protected", default="contextual_ts_protected")
    ap.add_argument("--unprotected", default="contextual_ts")
    ap.add_argument(
        "--only", action="append",
        choices=["beta", "linear", "target", "target_ids", "target_fresh_ids", "scenario"],
    )  # fmt: skip
    args = ap.parse_args()
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))

    import allocator
    from allocator.serving import AllocatorConfig

    assert Path(allocator.__file__).resolve().is_relative_to(tree), allocator.__file__
    label = args.label or tree.name
    only = set(args.only or ["beta", "linear", "scenario"])  # the target case on request
    res: dict[str, Any] = {"tree": str(tree), "label": label}
    for name, fn in (("beta", lambda: case_beta(allocator, AllocatorConfig, args)),
                     ("linear", lambda: case_linear(allocator, AllocatorConfig, args)),
                     ("target", lambda: case_target(allocator, AllocatorConfig, args)),
                     ("target_ids",
                      lambda: case_target(allocator, AllocatorConfig, args, as_ids=True)),
                     ("target_fresh_ids",
                      lambda: case_target(allocator, AllocatorConfig, args, as_ids=True,
                                          fresh=True)),
                     ("scenario", lambda: case_scenario(tree, args))):  # fmt: skip
        if name not in only:
            continue
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as err:  # report and go on: a failing case is a finding
            import traceback

            traceback.print_exc()
            res[name] = {"error": f"{type(err).__name__}: {err}"}
        print(
            f"[{label}] {name} done in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True
        )

    def f(case: str, key: str, fmt: str) -> str:
        if case not in res:
            return "skipped"
        v = res[case].get(key)
        return "ERROR" if v is None else format(v, fmt)

    print(f"\n| {label} | figure | value |\n|---|---|---|")
    print(f"| beta K=10 | decide p50 µs | {f('beta', 'decide_p50_us', '.1f')} |")
    print(f"| beta K=10 | decide p99 µs | {f('beta', 'decide_p99_us', '.1f')} |")
    print(f"| beta K=10 | decide_many(1000) decisions/s | {f('beta', 'many_per_s', ',.0f')} |")
    print(f"| beta K=10 | decide_many(1000) decisions/CPU-s | "
          f"{f('beta', 'many_per_cpu_s', ',.0f')} |")  # fmt: skip
    m = res.get("linear", {}).get("merchants", args.merchants)
    print(f"| shared_linear 200/{m:,} | decide p50 µs | {f('linear', 'decide_p50_us', '.1f')} |")
    print(f"| shared_linear 200/{m:,} | decide p99 µs | {f('linear', 'decide_p99_us', '.1f')} |")
    print(f"| shared_linear 200/{m:,} | decide_many(1000) decisions/s | "
          f"{f('linear', 'many_per_s', ',.0f')} |")  # fmt: skip
    print(f"| shared_linear 200/{m:,} | decide_many(1000) decisions/CPU-s | "
          f"{f('linear', 'many_per_cpu_s', ',.0f')} |")  # fmt: skip
    print(f"| shared_linear 200/{m:,} | build s | {f('linear', 'build_s', '.1f')} |")
    for case, form in (("target", "indices"), ("target_ids", "string ids"),
                       ("target_fresh_ids", "fresh string ids")):  # fmt: skip
        m = res.get(case, {}).get("merchants", args.merchants)
        for key, what, fmt in (("many_per_s", "decide_many(1000) decisions/s", ",.0f"),
                               ("many_per_cpu_s", "decide_many(1000) decisions/CPU-s", ",.0f"),
                               ("many_per_cpu_s_best", "decide_many(1000) best decisions/CPU-s",
                                ",.0f"),
                               ("decide_p50_us", "decide p50 µs", ".1f"),
                               ("decide_p99_us", "decide p99 µs", ".1f")):  # fmt: skip
            print(f"| target 200/{m:,} ({form}), 5 contracts, log | {what} | "
                  f"{f(case, key, fmt)} |")  # fmt: skip
    print(f"| scenario | protected s | {f('scenario', 'protected_s', '.2f')} |")
    print(f"| scenario | unprotected s | {f('scenario', 'unprotected_s', '.2f')} |")
    print(f"| scenario | protected/unprotected | {f('scenario', 'ratio', '.2f')} |")
    print("JSON " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
