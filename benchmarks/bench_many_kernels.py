"""The target workload's two compiled stages of ``decide_many``, CPU µs per decision.

    python benchmarks/bench_many_kernels.py --tree /path/to/checkout --merchants 1000000 \
        [--sets 1000]

The allocator of ``bench_engine_core.py``'s target case, then on one 1,000-request batch
of string-id candidate lists (``--sets`` distinct lists: 64 reuse lines, as the engine
benchmark does; 1000 gives every request its own, as retrieval would), this thread's CPU
time (``time.thread_time``, min and median of ``--repeats``) of the batch's id lookup
(``Engine.resolve_many``: the lists joined and looked up in one kernel) and of the decide
kernel (``Engine.decide_checked``: scores, joint bank scan, contracts, draw). Run main and
a branch interleaved; the figures are memory-bound at 10^6, so quote ratios of one run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engine_core import T0, target_allocator, tree_args

    args = tree_args(__doc__.split("\n")[0], sets=True)
    import numpy as np

    n, r = args.merchants, 1000
    alloc, rng = target_allocator(args.tree, n, "bench-kernels-", log_flush_interval_s=1000)
    engine, ids = alloc.engine, alloc.registry.all_ids()
    pool = [np.concatenate([np.arange(3), 3 + rng.choice(n, size=197, replace=False)])
            for _ in range(args.sets)]  # fmt: skip
    given = [[ids[i] for i in pool[k % args.sets]] for k in range(r)]
    ptr, idx = engine.resolve_many(given)
    xs = rng.standard_normal((r, 8))
    codes = engine.encode_attrs([{"slot": "entry"}] * r, r)
    times: dict[str, list[float]] = {"id lookup": [], "decide kernel": []}
    for rep in range(args.repeats):
        t = time.thread_time()
        engine.resolve_many(given)
        times["id lookup"].append((time.thread_time() - t) / r * 1e6)
        stamps = T0 + (rep + 1) * 10 * r + np.arange(r, dtype=float)
        t = time.thread_time()
        engine.decide_checked(ptr, idx, xs, stamps, codes)
        times["decide kernel"].append((time.thread_time() - t) / r * 1e6)
    alloc.close()
    print(f"\n| {args.tree.name} (200 of {n:,}, {args.sets} lists) | CPU µs per decision, "
          "min | median |\n|---|---|---|")  # fmt: skip
    for label, v in times.items():
        print(f"| {label} | {min(v):.2f} | {statistics.median(v):.2f} |")


if __name__ == "__main__":
    main()
