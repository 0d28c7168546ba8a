"""Where the target workload's single ``Allocator.decide`` spends its CPU, stage by stage.

    python benchmarks/bench_single_parts.py --tree /path/to/checkout [--merchants 1000000]
    BENCH=bench_single_parts.py benchmarks/bench_engine_core.sh BASE_COMMIT  # before/after

The allocator of ``bench_engine_core.py``'s target case (shared linear, 200 candidates as a
list of id strings, three partner floors + tilt + cold-start floor, decision log on), fed
back a little, then 5,000 single decisions per repeat, one event-second apart (so each expires
the decision of ``reward_wait_s`` before it, as a steady stream does, and a timed refresh
falls every ``refresh_every_s`` calls). Each stage is timed in CPU µs of this thread
(``time.thread_time_ns``) by wrapping the function that does it, and reported per
decision (a stage that runs on some calls only, the refresh, is averaged over all);
best of ``--repeats``. The wrappers cost ~0.1–0.3 µs each, so the stages sum to a little
more than an unwrapped call: compare stages, and quote ``bench_engine_core.py`` for the
end-to-end p50. The compiled stages (the fused kernel, the learning step) are also
reported alone, to set the floor a faster facade could reach.
"""

from __future__ import annotations

import collections
import gc
import sys
import time
from pathlib import Path
from typing import Any

#: single decisions per repeat
CALLS = 5000


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_engine_core import target_allocator, target_stream, tree_args

    args = tree_args(__doc__.split("\n")[0])
    import allocator.serving.allocator as facade

    n = args.merchants
    alloc, rng = target_allocator(args.tree, n, "bench-single-")
    req, clock = target_stream(alloc, rng, n, as_ids=True)
    for _ in range(1000):  # warm every path, expiries included
        alloc.decide(**req(clock))

    spent: dict[str, int] = collections.defaultdict(int)
    tick = time.thread_time_ns

    def wrap(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*a: Any, **k: Any) -> Any:
            t = tick()
            try:
                return inner(*a, **k)
            finally:
                spent[label] += tick() - t

        setattr(owner, name, timed)

    state, policy, engine = alloc._state, alloc.policy, alloc.engine
    outcomes = type(alloc._outcomes)
    stages = [  # (owner, function, label): the facade's steps in call order
        (facade, "resolve_context", "context"),
        (type(state), "admit", "admission (log, autosave)"),
        (type(state.time), "time_of", "request time"),
        (type(policy.registry), "joined_ids", "ids joined and encoded (str.join)"),
        (type(engine.contracts), "encode", "attributes encoded"),
        (facade, "decide_fused", "fused decision (all of it)"),
        (type(state.books), "decision_id", "decision id"),
        (type(engine), "decision", "Decision object"),
        (outcomes, "register_one", "pending registration"),
        (facade, "decision_row", "log row built"),
        (type(state.log), "write_decision", "log row buffered"),
        (outcomes, "_expire", "expiry of the due decision (all of it)"),
        (type(policy), "update_checked", "learning step (in expiry)"),
        (type(policy), "refresh", "refresh (every refresh_every_s)"),
    ]
    for owner, name, label in stages:
        wrap(owner, name, label)
    call = policy._contracted[1]  # the bound entry of ids under contracts
    kernel = call.entry

    def timed_kernel(*a: Any) -> Any:
        t = tick()
        out = kernel(*a)
        spent["compiled kernel (lookup + decide)"] += tick() - t
        return out

    call.entry = timed_kernel
    best: dict[str, float] = {}
    totals = []
    for _ in range(args.repeats):
        spent.clear()
        reqs = [req(clock) for _ in range(CALLS)]
        gc.disable()
        t = tick()
        for r in reqs:
            alloc.decide(**r)
        totals.append((tick() - t) / CALLS / 1e3)
        gc.enable()
        for label, ns in spent.items():
            best[label] = min(best.get(label, float("inf")), ns / CALLS / 1e3)
    alloc.close()
    order = [label for _, _, label in stages]
    order.insert(order.index("fused decision (all of it)") + 1, "compiled kernel (lookup + decide)")
    print(f"\n| {args.tree.name}: single decide, 200 string ids of {n:,} | CPU µs per decision |")
    print("|---|---|")
    print(f"| whole call (wrapped), best repeat | {min(totals):.1f} |")
    for label in order:
        if label in best:
            print(f"| {label} | {best[label]:.2f} |")


if __name__ == "__main__":
    main()
