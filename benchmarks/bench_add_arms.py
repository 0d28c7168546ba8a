"""Adding arms while serving: ``Allocator.add_arms`` of many merchants at once, with two
threads of decide traffic, for a Beta family (256 bank rows) and the shared linear one.

Runs against the ``allocator`` on ``PYTHONPATH`` (``BENCH=bench_add_arms.py
bench_engine_core.sh BASE`` runs a worktree of a base commit, then this checkout, back to
back). Per family and size: the add's wall seconds, the longest decision-lock hold it took
(``metrics()["catalogue_max_lock_s"]``), and the decide latency the traffic threads saw
during the add (p50, p99, max: GIL and scheduling included), over how many decides.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from allocator import Allocator
from allocator.serving import AllocatorConfig

T0 = 1_760_000_000.0


def config(kind: str, n_old: int) -> AllocatorConfig:
    arms = [{"id": "taobao", "group": "taobao"}, {"id": "douyin", "group": "douyin"}]
    arms += [{"id": f"m{i}", "group": "mini_shop"} for i in range(n_old)]
    policy: dict = {"kind": kind}
    if kind == "shared_linear":
        policy |= {"n_context_features": 1, "n_arm_features": 2}
        for i, arm in enumerate(arms):
            arm["features"] = [1.0, i / len(arms)]
    return AllocatorConfig.model_validate({
        "engine": {"policy": policy,
                   "objective": {"order": 1.0, "take_rates": {"taobao": 0.03, "mini_shop": 0.05}}},
        "arms": arms,
        "serving": {"reward_wait_s": 1e9, "refresh_every_s": None},
    })  # fmt: skip


def run(kind: str, n_old: int, n_new: int) -> str:
    alloc = Allocator(config(kind, n_old), seed=1, clock=lambda: T0)
    alloc.warmup()
    x = [1.0] if kind == "shared_linear" else None
    stop, waits, during = threading.Event(), [], []

    def traffic(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            cand = np.concatenate([[0, 1], 2 + rng.choice(n_old, 8, replace=False)])
            start = time.perf_counter()
            alloc.decide(cand, x)
            waits.append((start, time.perf_counter() - start))

    threads = [threading.Thread(target=traffic, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    feats = np.column_stack([np.ones(n_new), np.linspace(0, 1, n_new)]) if x else None
    start = time.perf_counter()
    alloc.add_arms([f"new{i}" for i in range(n_new)], "mini_shop", feats)
    end = time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    during = np.array([w for s, w in waits if start <= s <= end]) * 1e6
    hold = alloc.metrics()["catalogue_max_lock_s"] * 1e6
    p50, p99, worst = np.percentile(during, [50, 99, 100]) if during.size else [np.nan] * 3
    return (f"| {kind} | {n_old:,} | {n_new:,} | {end - start:.2f} | {hold:,.0f} | "
            f"{p50:.0f} | {p99:,.0f} | {worst:,.0f} | {during.size:,} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tree", default="")
    ap.add_argument("--sizes", default="1000,100000", help="arms added, comma-separated")
    args = ap.parse_args()
    print(f"\n{args.tree}")
    print(
        "| family | arms before | added | add s | longest hold µs | decide p50 µs during | "
        "p99 | max | decides |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("beta_bernoulli", "shared_linear"):
        for n_new in (int(s) for s in args.sizes.split(",")):
            print(run(kind, 50_000, n_new), flush=True)


if __name__ == "__main__":
    main()
