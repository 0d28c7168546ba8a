"""Ids and the catalogue at 10^6 merchants: candidate-id resolution, build, memory, snapshots.

Runs against the ``allocator`` on ``PYTHONPATH`` (``bench_catalogue.sh`` runs a worktree of
a base commit, then this checkout, back to back). Shared linear d = 16 (4 arm × 4 context
features), 200 random merchants a request out of 10^6 (ids are decimal strings, so the
same catalogue takes IntIds), 64 request sets in rotation: single ``Allocator.decide`` p50
with candidates as indices, a list of str, a numpy string array and IntIds (when the tree
has them); Beta K=10 ``Allocator.decide`` with string ids against its bare kernel; then
build time (from the arms file when the tree reads one, else the inline config), traced
memory after a warm-up build, snapshot save and load; then what first touching fresh
memory costs on the machine at that moment (``--scale-only``: the 10^6 table alone;
``--only beta`` or ``--only shared``: that decide workload alone). Families with one
get a ``lean kernel`` row: the single-request entry the facade calls without contracts
(15 arguments for the per-arm families, 24 for the shared linear one).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_serving import T0, bare_call, percentiles, save_and_load

import allocator
from allocator import Allocator

PARTNERS = ("taobao", "douyin", "pdd")
GROUPS = [*PARTNERS, "mini_shop"]


def policy(kind: str) -> dict[str, Any]:
    if kind == "shared_linear":
        return {"kind": kind, "n_context_features": 4, "n_arm_features": 4, "bank_rows": 64}
    return {"kind": kind}


def catalogue(n: int) -> tuple[list[str], list[str], np.ndarray]:
    ids = list(PARTNERS) + [str(10_000_000 + i) for i in range(n)]
    groups = list(PARTNERS) + ["mini_shop"] * n
    return ids, groups, np.random.default_rng(0).normal(size=(n + 3, 4)).round(3)


def config(kind: str, n: int, path: Path | None) -> dict[str, Any]:
    """The allocator config: ``arms_file`` at ``path`` if given, else the arms inline."""
    out: dict[str, Any] = {
        "engine": {"policy": policy(kind)},
        "serving": {"reward_wait_s": 1e9, "refresh_every_s": None},
    }
    if path is not None:
        out["arms_file"] = {"path": str(path), "groups": GROUPS}
        return out
    ids, groups, feats = catalogue(n)
    shared = kind == "shared_linear"
    out["arms"] = [
        {"id": i, "group": g, **({"features": f.tolist()} if shared else {})}
        for i, g, f in zip(ids, groups, feats, strict=True)
    ]
    return out


def write_file(n: int, path: Path) -> Path:
    ids, groups, feats = catalogue(n)
    table = pa.table({
        "id": ids, "group": pa.array(groups).dictionary_encode(),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), 4),
    })  # fmt: skip
    pq.write_table(table, path)
    return path


def decide_rows(alloc: Allocator, label: str, n_cand: int, n: int) -> list[str]:
    rng = np.random.default_rng(1)
    n_arms = alloc.registry.n_arms
    lo = 0 if n_cand < 20 else len(PARTNERS)  # IntIds: merchants (numeric ids) only
    cands = [np.sort(rng.choice(n_arms - lo, n_cand, replace=False)) + lo for _ in range(64)]
    ids = [[alloc.registry.arm_id(int(a)) for a in c] for c in cands]
    d = alloc.policy.n_features
    xs = rng.normal(size=(64, d)) if d else [None] * 64
    forms: dict[str, list[Any]] = {
        "indices": cands, "list of str": ids, "numpy str array": [np.array(c) for c in ids],
    }  # fmt: skip
    if hasattr(allocator, "IntIds") and lo:
        forms["IntIds (int64)"] = [allocator.IntIds([int(a) for a in c]) for c in ids]
    bare = [bare_call(alloc, c, x) for c, x in zip(cands, xs, strict=True)]
    rows = {"bare kernel": percentiles(lambda i: bare[i % 64](), n)}
    lean = getattr(alloc.policy, "DECIDE_ONE", None)
    if lean is not None:  # the single-request entry without contracts (a (1, d) context)
        tail = (*alloc.policy.lean_args(), np.empty(n_cand), np.zeros(2, np.int64))
        largs = [(c, *(() if x is None else (x[None, :],)), *tail)
                 for c, x in zip(cands, xs, strict=True)]  # fmt: skip
        rows["lean kernel (DECIDE_ONE)"] = percentiles(lambda i: lean(*largs[i % 64]), n)
    t = T0
    for name, reqs in forms.items():
        rows[f"Allocator.decide ({name})"] = percentiles(
            lambda i, r=reqs, t0=t: alloc.decide(r[i % 64], xs[i % 64], timestamp=t0 + i), n
        )
        t += n
    base = rows["bare kernel"][0]
    return [
        f"| {label} | {name} | {p50:.1f} | {p99:.1f} | {p50 / base:.2f} |"
        for name, (p50, p99) in rows.items()
    ]


def scale_row(kind: str, n: int, path: Path | None, tmp: Path) -> str:
    Allocator(config(kind, 10, None), seed=0).warmup()  # kernels loaded before tracing
    gc.collect()
    cfg = config(kind, n, path)
    t = time.perf_counter()
    alloc = Allocator(cfg, seed=0)
    build = time.perf_counter() - t
    del alloc
    gc.collect()
    tracemalloc.start()
    alloc = Allocator(cfg, seed=0)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    snap = tmp / f"{kind}.npz"
    save, load = save_and_load(alloc, snap)
    source = "arms file" if path is not None else "inline config"
    return (
        f"| {kind}, {n:,} merchants | {source} | {build:.2f} s | {traced / 2**20:,.0f} MiB "
        f"({traced / 1e6:,.0f} MB) | {snap.stat().st_size / 2**20:,.0f} MiB | {save:.2f} s | "
        f"{load:.2f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--merchants", type=int, default=1_000_000)
    parser.add_argument("--tree", default=".")
    parser.add_argument("--scale-only", action="store_true", help="only the 10^6 table")
    parser.add_argument(
        "--only", choices=("shared", "beta"), help="one decide workload, no 10^6 table"
    )
    args = parser.parse_args()
    print(f"\n## tree {args.tree} (allocator from {allocator.__file__})\n")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        reads_files = hasattr(allocator, "IntIds")
        files = reads_files and args.only != "beta"
        path = write_file(args.merchants, tmp / "arms.parquet") if files else None
        if not args.scale_only:
            print("| workload | path | p50 µs | p99 µs | p50 / bare kernel |")
            print("|---|---|---|---|---|")
            rows = []
            if args.only in (None, "shared"):
                shared = Allocator(config("shared_linear", args.merchants, path), seed=0)
                shared.warmup()
                label = f"shared linear d=16, 200 of {args.merchants:,}"
                rows += decide_rows(shared, label, 200, args.n)
                del shared
            if args.only in (None, "beta"):
                beta = Allocator(config("beta_bernoulli", 7, None), seed=0)
                beta.warmup()
                rows += decide_rows(beta, "Beta K=10", 10, 4 * args.n)
            print("\n".join(rows))
            if args.only:
                return
        print("\n| state | built from | build | memory (traced) | snapshot | save | load |")
        print("|---|---|---|---|---|---|---|")
        for kind in ("beta_bernoulli", "shared_linear"):
            print(scale_row(kind, args.merchants, path, tmp))
        print(f"\nfirst touch of fresh memory: {first_touch_ms_per_mib():.2f} ms/MiB")


def first_touch_ms_per_mib() -> float:
    """What writing never-touched memory costs on this machine now (256 MiB, fresh from
    the OS): builds and loads pay it for every array they create, so on a virtual machine
    whose pages are backed on first touch it can dominate them."""
    t = time.perf_counter()
    np.ones(2**25)  # 256 MiB
    return (time.perf_counter() - t) * 1e3 / 256


if __name__ == "__main__":
    main()
