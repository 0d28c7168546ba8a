"""decide() latency with contracts (3 partner floors + Mini Shop tilt + cold-start floor)
against the same policy without constraints, measured in the same run.

Run by hand: ``python benchmarks/bench_constraints.py [--n 20000]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime, timedelta

import numba
import numpy as np

from allocator import ArmRegistry, BetaBernoulliConfig, Engine, LinearGaussianConfig
from allocator.constraints import ConstraintSet

T0 = datetime(2025, 10, 1, tzinfo=UTC)
PARTNERS = ("taobao", "douyin", "pinduoduo")


def contracts() -> ConstraintSet:
    def sched(value: float, end_value: float | None = None) -> dict:
        out = {
            "start": T0.isoformat(),
            "end": (T0 + timedelta(days=90)).isoformat(),
            "start_value": value,
            "shape": "linear" if end_value is not None else "constant",
        }
        if end_value is not None:
            out["end_value"] = end_value
        return out

    items = [
        {
            "name": f"{p}_protected",
            "kind": "floor",
            "target": {"group": p},
            "schedule": sched(share, 0.0),
            "scope": {"category": ["food", "apparel"]},
        }
        for p, share in zip(PARTNERS, (0.2, 0.15, 0.1), strict=True)
    ]
    items.append(
        {
            "name": "mini_shop_tilt",
            "kind": "tilt",
            "target": {"group": "mini_shop"},
            "schedule": sched(1.5),
        }
    )
    items.append(
        {
            "name": "cold_start",
            "kind": "floor",
            "target": {"cold_in_group": "mini_shop", "n_min": 20},
            "schedule": sched(0.1),
        }
    )
    return ConstraintSet.model_validate({"window": 1000, "constraints": items})


def setup(kind: str, n_merchants: int):
    reg = ArmRegistry(capacity=n_merchants + 8)
    for p in PARTNERS:
        reg.add([p], p)
    reg.add([f"merchant:{i}" for i in range(n_merchants)], "mini_shop")
    cfg = BetaBernoulliConfig() if kind == "beta" else LinearGaussianConfig(n_features=16)
    return reg, cfg


def time_decisions(decide, requests) -> np.ndarray:
    out = np.empty(len(requests))
    for i, args in enumerate(requests):
        t = time.perf_counter_ns()
        decide(*args)
        out[i] = time.perf_counter_ns() - t
    return out / 1000.0


def bench(kind: str, n_merchants: int, n_cand: int, n: int) -> dict:
    reg, cfg = setup(kind, n_merchants)
    rng = np.random.default_rng(0)
    partners = reg.lookup(list(PARTNERS))
    merchants = reg.members("mini_shop")
    cands = [
        np.concatenate([partners, rng.choice(merchants, n_cand - 3, replace=False)])
        for _ in range(n)
    ]
    xs = rng.normal(size=(n, 16)) if kind != "beta" else [None] * n
    cats = rng.choice(["food", "apparel", "toys"], n)
    times = T0.timestamp() + np.arange(n) * 10.0

    plain = Engine(cfg, None, reg, seed=1)
    constrained = Engine(cfg, contracts(), reg, seed=1)
    plain_req = [(c, x) for c, x in zip(cands, xs, strict=True)]
    cons_req = [
        (c, x, {"category": k}, t) for c, x, k, t in zip(cands, xs, cats, times, strict=True)
    ]
    for _ in range(2):  # warm-up (compilation) and a first pass, then interleaved timing
        time_decisions(plain.decide, plain_req[:200])
        time_decisions(constrained.decide, cons_req[:200])
    a = time_decisions(plain.decide, plain_req)
    b = time_decisions(constrained.decide, cons_req)
    forced = sum(r.backstops for r in constrained.report())
    return {
        "workload": f"{kind}, {n_cand} candidates of {n_merchants + 3} arms",
        "plain_p50": np.percentile(a, 50),
        "plain_p99": np.percentile(a, 99),
        "cons_p50": np.percentile(b, 50),
        "cons_p99": np.percentile(b, 99),
        "ratio_p50": np.percentile(b, 50) / np.percentile(a, 50),
        "backstop_rate": forced / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    print(
        f"{datetime.now(UTC):%Y-%m-%d} | {platform.machine()} | {platform.python_version()} "
        f"| numpy {np.__version__} | numba {numba.__version__}"
    )
    print(
        "| workload | plain p50 µs | plain p99 µs | constrained p50 µs | constrained p99 µs "
        "| ratio p50 | backstop rate |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, n_merchants, n_cand in (("beta", 7, 10), ("beta", 1000, 50), ("linear", 17, 20)):
        r = bench(kind, n_merchants, n_cand, args.n)
        print(
            f"| {r['workload']} | {r['plain_p50']:.2f} | {r['plain_p99']:.2f} | "
            f"{r['cons_p50']:.2f} | {r['cons_p99']:.2f} | {r['ratio_p50']:.2f}× | "
            f"{r['backstop_rate']:.4f} |"
        )


if __name__ == "__main__":
    main()
