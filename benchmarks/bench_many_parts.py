"""Where the target workload's ``decide_many`` spends its Python-side CPU, per decision.

    python benchmarks/bench_many_parts.py --tree /path/to/checkout [--merchants 20000]
    BENCH=bench_many_parts.py benchmarks/bench_engine_core.sh BASE_COMMIT  # before/after

The allocator of ``bench_engine_core.py``'s target case (indices and string ids), then,
on 1,000-request batches, CPU µs per decision of this thread (``time.thread_time``, best of
``--repeats``): shaping the requests into the batch (``serving.requests.request_batch``:
keys, times, candidates, contexts), building the batch's decision-log table
(``serving.log_rows.decision_rows``) and encoding it as a part (``logs.parts.encode_part``:
the log writer thread's work), then the encoded part's bytes per decision (schema 3 adds a
catalogue part once per writer: its bytes per arm are printed too). Requests cycle through
``--sets`` candidate sets: 64 (the default, as the figures before schema 3 were measured)
repeat within a part, which flatters compression; 1000 gives every row of a batch its own
set, as retrieval would. It reaches into the facade (its clock and books) to call those
stages alone; both request_batch signatures (before and
after issue 15) and both decision_rows signatures (schema 2 and 3) are handled.
"""

from __future__ import annotations

import inspect
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engine_core import Clock, target_allocator, tree_args

    args = tree_args(__doc__.split("\n")[0], sets=True)
    import numpy as np
    import pyarrow as pa

    from allocator.logs import parts
    from allocator.serving import log_rows, requests
    from allocator.serving.requests import request_batch

    n = args.merchants
    alloc, rng = target_allocator(args.tree, n, "bench-parts-", log_flush_interval_s=1000)
    pool = [np.concatenate([np.arange(3), 3 + rng.choice(n, size=197, replace=False)])
            for _ in range(args.sets)]  # fmt: skip
    ids = alloc.registry.all_ids()
    clock = Clock()

    def req(c: Clock, as_ids: bool = False) -> dict[str, Any]:
        k = c.i % args.sets
        cand = [ids[i] for i in pool[k]] if as_ids else pool[k]
        return {"candidates": cand, "context": rng.standard_normal(8),
                "timestamp": c.next(), "attrs": {"slot": "entry"}}  # fmt: skip

    engine = alloc.engine
    if hasattr(alloc, "_state"):  # the facade's serving state (older trees: the facade's own)
        state = alloc._state
        books, serving_clock, log = state.books, state.time, state.log
        resolve = partial(requests.resolve_context, state.feature_index)
    else:
        books, serving_clock, log = alloc._books, alloc._time, alloc._log
        resolve = alloc._resolve_context
    if "resolve_times" in inspect.signature(request_batch).parameters:

        def shape(reqs: list[dict[str, Any]]) -> Any:
            def times(s: list[Any]) -> Any:
                return serving_clock.times_of(s, "requests[{}]", books.last_t)[0]

            return request_batch(engine, reqs, times, resolve)
    else:

        def shape(reqs: list[dict[str, Any]]) -> Any:
            def one(t: Any, w: str) -> float:
                return float(serving_clock.time_of(t, w, books.last_t)[0])

            return request_batch(engine, reqs, one, resolve)

    captured: list[tuple[Any, ...]] = []
    build = log_rows.decision_rows
    sys.modules["allocator.serving.allocator"].decision_rows = lambda *a: (  # type: ignore[attr-defined]
        captured.append(a) or build(*a)
    )
    alloc.decide_many([req(clock) for _ in range(1000)])
    table = pa.concat_tables([build(*captured[-1]) for _ in range(3)])
    name = parts.PartName("decisions", "r0", 1)
    best: dict[str, float] = {}

    def keep(label: str, us: float) -> None:
        best[label] = min(best.get(label, float("inf")), us)

    size = len(parts.encode_part(table, name, "bench")) / table.num_rows
    log_dir = Path(log.writer.directory)
    for _ in range(args.repeats):
        for label, as_ids in (("indices", False), ("string ids", True)):
            reqs = [req(clock, as_ids) for _ in range(1000)]
            t = time.thread_time()
            shape(reqs)
            keep(f"request shaping, {label}", (time.thread_time() - t) * 1e3)
        t = time.thread_time()
        build(*captured[-1])
        keep("log table", (time.thread_time() - t) * 1e3)
        t = time.thread_time()
        parts.encode_part(table, name, "bench")
        keep("part encoding (writer thread)", (time.thread_time() - t) / table.num_rows * 1e6)
    alloc.close()
    catalogue = sorted(log_dir.glob("catalogue-*.parquet"))
    per_arm = sum(p.stat().st_size for p in catalogue) / len(ids) if catalogue else 0.0
    print(f"\n| {args.tree.name} (200 of {n:,}) | CPU µs per decision |\n|---|---|")
    for label, us in best.items():
        print(f"| {label} | {us:.2f} |")
    print(f"| part bytes per decision | {size:,.0f} |")
    print(f"| catalogue bytes per arm (once per writer) | {per_arm:.1f} |")


if __name__ == "__main__":
    main()
