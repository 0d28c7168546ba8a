"""Where the issue-15 target workload's compiled decision time goes, per request, in CPU µs.

    python benchmarks/bench_kernel_split.py --tree /path/to/checkout [--merchants 20000]
    BENCH=bench_kernel_split.py benchmarks/bench_engine_core.sh BASE_COMMIT  # before/after

The allocator of ``bench_engine_core.py``'s target case is built and fed back a little (as
there), then the shared-linear decide kernel is called directly on 1,000 prepared requests:
with the five contracts (floors, tilt, cold-start floor), without them, and without the draw
(scores and bank win-shares only). CPU time of this thread (``time.thread_time``), best of
``--repeats``: on a machine shared with other jobs the wall clock mostly measures them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engine_core import target_allocator, target_stream, tree_args

    args = tree_args(__doc__.split("\n")[0])
    import numpy as np

    alloc, rng = target_allocator(args.tree, args.merchants, "bench-split-")
    req, clock = target_stream(alloc, rng, args.merchants)
    engine, policy = alloc.engine, alloc.policy
    r = 1000
    reqs = [req(clock) for _ in range(r)]
    ptr = np.arange(r + 1, dtype=np.int64) * 200
    idx = np.concatenate([q["candidates"] for q in reqs])
    xs = np.stack([q["context"] for q in reqs])
    times = np.array([q["timestamp"] for q in reqs])
    codes = engine.encode_attrs([q["attrs"] for q in reqs], r)
    contracts = engine.contracts.kernel_args(engine.registry.arm_group, policy.state.n_obs)
    probs, out = np.empty(idx.shape[0]), np.empty((3, r), dtype=np.int64)
    cases = {
        "contracts + draw": (True, contracts),
        "draw, no contract": (True, None),
        "scores + win shares only": (False, None),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeats):  # the cases interleaved, each repeat
        for name, (draw, con) in cases.items():
            call = policy.kernel_args(ptr, idx, xs, times, codes, draw, con, probs, out)
            t = time.thread_time()
            policy.KERNEL(*call)
            best[name] = min(best[name], (time.thread_time() - t) / r * 1e6)
    alloc.close()
    label = args.tree.name
    print(f"\n| {label} (200 of {args.merchants:,}) | CPU µs per request |\n|---|---|")
    for name, v in best.items():
        print(f"| {name} | {v:.1f} |")
    extra = best["contracts + draw"] - best["draw, no contract"]
    print(f"| contracts alone (difference) | {extra:.1f} |")


if __name__ == "__main__":
    main()
