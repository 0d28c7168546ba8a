"""Serving facade overhead, memory at catalogue scale, snapshot save/load time.

For each workload: p50/p99 of the bare decide kernel, of ``Policy.decide`` and of
``Allocator.decide`` (candidates as registry indices, and as string ids), measured in the
same run. Run by hand: ``python benchmarks/bench_serving.py [--n 20000]``.
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
from allocator.kernels import linear as kl
from allocator.kernels import per_arm as kpa
from allocator.kernels import shared_linear as ksl

T0 = 1_760_000_000.0


def config(kind: str, n_merchants: int, d: int = 16) -> AllocatorConfig:
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
            "serving": {"reward_wait_s": 1e9, "refresh_every_s": None},
        }
    )


def bare_call(alloc: Allocator, cand: np.ndarray, x: Any) -> Any:
    """A zero-argument closure calling the policy's decide kernel directly."""
    p = alloc.policy
    act = alloc.registry.active
    if p.config.kind == "beta_bernoulli":
        args = (
            cand,
            act,
            p._pos_of_arm,
            p._bank,
            p._winner,
            p._mean,
            p._sd,
            p._rule,
            p._ucb_alpha,
            p._eps,
            p._stream,
            p._best,
            p._arg,
            p._p,
            p._err,
            True,
        )
        return lambda: kpa.decide_per_arm(*args)
    if p.config.kind == "linear_gaussian":
        args = (
            x,
            cand,
            act,
            p._pos_of_arm,
            p._mu,
            p._a_inv,
            p._v,
            p._z,
            p._rule,
            p._ucb_alpha,
            p._eps,
            p._stream,
            p._mean_buf,
            p._sd_buf,
            p._best,
            p._arg,
            p._p,
            p._err,
            True,
        )
        return lambda: kl.decide_linear(*args)
    args = (
        x,
        cand,
        act,
        p._pos_of_arm,
        p._features,
        p._mu,
        p._a_inv,
        p._v,
        p._z,
        p._rule,
        p._ucb_alpha,
        p._eps,
        p._stream,
        p._w_buf,
        p._pp_buf,
        p._mean_buf,
        p._sd_buf,
        p._best,
        p._arg,
        p._p,
        p._err,
        True,
    )
    return lambda: ksl.decide_shared(*args)


def percentiles(fn: Any, n: int) -> tuple[float, float]:
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t = clock()
        fn(i)
        out[i] = clock() - t
    return float(np.percentile(out, 50) / 1e3), float(np.percentile(out, 99) / 1e3)


def bench(label: str, kind: str, n_merchants: int, n_cand: int, n: int) -> list[str]:
    rng = np.random.default_rng(1)
    alloc = Allocator(config(kind, n_merchants), seed=0)
    alloc.warmup()
    n_arms = alloc.registry.n_arms
    cands = [np.sort(rng.choice(n_arms, n_cand, replace=False)) for _ in range(64)]
    ids = [[alloc.registry.arm_id(int(a)) for a in c] for c in cands]
    d = alloc.policy.n_features
    xs = rng.normal(size=(64, d)) if d else [None] * 64
    bare = [bare_call(alloc, c, x) for c, x in zip(cands, xs, strict=True)]
    pol = alloc.policy
    rows = {
        "bare kernel": percentiles(lambda i: bare[i % 64](), n),
        "Policy.decide": percentiles(lambda i: pol.decide(cands[i % 64], xs[i % 64]), n),
        "Allocator.decide (indices)": percentiles(
            lambda i: alloc.decide(cands[i % 64], xs[i % 64], timestamp=T0 + i), n),
        "Allocator.decide (string ids)": percentiles(
            lambda i: alloc.decide(ids[i % 64], xs[i % 64], timestamp=T0 + n + i), n),
    }  # fmt: skip
    base = rows["bare kernel"][0]
    return [
        f"| {label} | {name} | {p50:.2f} | {p99:.2f} | {p50 - base:+.2f} |"
        for name, (p50, p99) in rows.items()
    ]


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
            t = time.perf_counter()
            alloc.save(path)
            save = time.perf_counter() - t
            t = time.perf_counter()
            Allocator.load(path)
            load = time.perf_counter() - t
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
        + bench("disjoint linear d=16 K=20", "linear_gaussian", 17, 20, args.n)
        + bench(f"shared linear d=16, 200 of {args.merchants:,}", "shared_linear",
                args.merchants, 200, args.n // 4)
    ):  # fmt: skip
        print(row)
    print("\n| state | memory (traced) | build | snapshot size | save | load |")
    print("|---|---|---|---|---|---|")
    for row in memory_and_snapshots(args.merchants):
        print(row)


if __name__ == "__main__":
    main()
