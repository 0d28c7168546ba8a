"""Serving facade overhead, memory at catalogue scale, snapshot save/load time.

For each workload: p50/p99 of the bare decide kernel, of ``Policy.decide``, of
``Engine.decide`` (contracts in the kernel when the workload has them) and of
``Allocator.decide`` (candidates as registry indices, and as string ids), and the cost per
decision of ``Allocator.decide_many`` with 1,000 requests a call, measured in the same run.
Run by hand: ``python benchmarks/bench_serving.py [--n 20000]``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numba
import numpy as np

from allocator import Allocator, AllocatorConfig

T0 = 1_760_000_000.0


CONTRACTS = {"constraints": [
    {"name": "taobao_floor", "kind": "floor", "target": {"group": "taobao"},
     "schedule": {"start": "2025-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",
                  "start_value": 0.2}},
    {"name": "douyin_cap", "kind": "cap", "target": {"group": "douyin"},
     "schedule": {"start": "2025-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",
                  "start_value": 0.6}},
    {"name": "mini_shop_tilt", "kind": "tilt", "target": {"group": "mini_shop"},
     "schedule": {"start": "2025-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",
                  "start_value": 1.5}},
]}  # fmt: skip


def config(kind: str, n_merchants: int, d: int = 16, contracts: bool = False) -> AllocatorConfig:
    policy: dict[str, Any] = {"kind": kind}
    arms: list[dict[str, Any]] = [{"id": p, "group": p} for p in ("taobao", "douyin", "pdd")]
    arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(n_merchants)]
    if kind == "linear_gaussian":
        policy["n_features"] = d
    if kind == "shared_linear":
        policy.update(n_context_features=4, n_arm_features=4, bank_rows=64)
        feats = np.random.default_rng(0).normal(size=(len(arms), 4)).round(3)
        for arm, f in zip(arms, feats, strict=True):
            arm["features"] = f.tolist()
    return AllocatorConfig.model_validate(
        {
            "engine": {"policy": policy},
            "arms": arms,
            "constraints": CONTRACTS if contracts else {},
            "serving": {"reward_wait_s": 1e9, "refresh_every_s": None},
        }
    )


def bare_call(alloc: Allocator, cand: np.ndarray, x: Any) -> Any:
    """The family's decide kernel on one prepared request (no contract): the floor."""
    pol = alloc.policy
    n = cand.shape[0]
    xs = np.zeros((1, 0)) if x is None else np.ascontiguousarray(x, dtype=np.float64)[None, :]
    args = pol.kernel_args(
        np.array([0, n]), cand, xs, np.zeros(1), np.zeros((1, 0), dtype=np.int64), True, None,
        np.empty(n), np.empty((3, 1), dtype=np.int64),
    )  # fmt: skip
    kernel = pol.KERNEL
    return lambda: kernel(*args)


def percentiles(fn: Any, n: int) -> tuple[float, float]:
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t = clock()
        fn(i)
        out[i] = clock() - t
    return float(np.percentile(out, 50) / 1e3), float(np.percentile(out, 99) / 1e3)


def bench(
    label: str, kind: str, n_merchants: int, n_cand: int, n: int, contracts: bool = False
) -> list[str]:
    rng = np.random.default_rng(1)
    alloc = Allocator(config(kind, n_merchants, contracts=contracts), seed=0)
    alloc.warmup()
    n_arms = alloc.registry.n_arms
    cands = [np.sort(rng.choice(n_arms, n_cand, replace=False)) for _ in range(64)]
    ids = [[alloc.registry.arm_id(int(a)) for a in c] for c in cands]
    d = alloc.policy.n_features
    xs = rng.normal(size=(64, d)) if d else [None] * 64
    bare = [bare_call(alloc, c, x) for c, x in zip(cands, xs, strict=True)]
    pol = alloc.policy
    engine = alloc.engine
    rows = {
        "bare kernel": percentiles(lambda i: bare[i % 64](), n),
        "Policy.decide": percentiles(lambda i: pol.decide(cands[i % 64], xs[i % 64]), n),
        "Engine.decide (contracts)" if contracts else "Engine.decide": percentiles(
            lambda i: engine.decide(cands[i % 64], xs[i % 64], None, T0 + i), n),
        "Allocator.decide (indices)": percentiles(
            lambda i: alloc.decide(cands[i % 64], xs[i % 64], timestamp=T0 + i), n),
        "Allocator.decide (string ids)": percentiles(
            lambda i: alloc.decide(ids[i % 64], xs[i % 64], timestamp=T0 + n + i), n),
    }  # fmt: skip

    def many(call: int) -> list[dict[str, Any]]:
        t0 = T0 + 3 * n + call
        return [{"candidates": cands[i % 64], "context": xs[i % 64], "timestamp": t0}
                for i in range(1000)]  # fmt: skip

    alloc.decide_many(many(0))
    calls = max(1, n // 2000)
    batches = [many(1 + c) for c in range(calls)]
    t = time.perf_counter()
    for batch in batches:
        alloc.decide_many(batch)
    per = (time.perf_counter() - t) / (calls * 1000) * 1e6
    rows["Allocator.decide_many, per decision (1,000/call)"] = (per, float("nan"))
    base = rows["bare kernel"][0]
    return [
        f"| {label} | {name} | {p50:.2f} | {p99:.2f} | {p50 - base:+.2f} |"
        for name, (p50, p99) in rows.items()
    ]


def save_and_load(alloc: Allocator, path: Path) -> tuple[float, float]:
    """Seconds to save ``alloc`` to ``path`` and to load it back."""
    t = time.perf_counter()
    alloc.save(path)
    save = time.perf_counter() - t
    t = time.perf_counter()
    Allocator.load(path)
    return save, time.perf_counter() - t


def memory_and_snapshots(n_merchants: int) -> list[str]:
    out = []
    for kind in ("beta_bernoulli", "shared_linear"):
        tracemalloc.start()
        t = time.perf_counter()
        alloc = Allocator(config(kind, n_merchants), seed=0)
        build = time.perf_counter() - t
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "snap.npz"
            save, load = save_and_load(alloc, path)
            size = path.stat().st_size
        out.append(
            f"| {kind}, {n_merchants:,} merchants | {current / 2**20:,.0f} MiB | "
            f"{build:.1f} s | {size / 2**20:,.0f} MiB | {save:.2f} s | {load:.2f} s |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--merchants", type=int, default=1_000_000)
    args = parser.parse_args()
    print(
        f"{datetime.now(UTC):%Y-%m-%d} | {platform.machine()} | {platform.python_version()} "
        f"| numpy {np.__version__} | numba {numba.__version__}\n"
    )
    print("| workload | path | p50 µs | p99 µs | p50 over bare kernel µs |")
    print("|---|---|---|---|---|")
    for row in (
        bench("Beta K=10", "beta_bernoulli", 7, 10, args.n)
        + bench("Beta K=10, floor+cap+tilt", "beta_bernoulli", 7, 10, args.n, contracts=True)
        + bench("disjoint linear d=16 K=20", "linear_gaussian", 17, 20, args.n)
        + bench(f"shared linear d=16, 200 of {args.merchants:,}", "shared_linear",
                args.merchants, 200, args.n // 4)
        + bench(f"shared linear d=16, 200 of {args.merchants:,}, floor+cap+tilt",
                "shared_linear", args.merchants, 200, args.n // 4, contracts=True)
    ):  # fmt: skip
        print(row)
    print("\n| state | memory (traced) | build | snapshot size | save | load |")
    print("|---|---|---|---|---|---|")
    for row in memory_and_snapshots(args.merchants):
        print(row)


if __name__ == "__main__":
    main()
