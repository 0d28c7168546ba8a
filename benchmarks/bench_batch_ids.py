"""A batch's candidate ids resolved as one (``Engine.resolve_many``'s whole-batch lookup)
against request by request (``ArmRegistry.lookup`` per request, the path mixed forms take).

    PYTHONPATH=. python benchmarks/bench_batch_ids.py [--merchants 100000 1000000] [--repeats 9]

A catalogue of integer ids (every form applies), 1,000 requests of 200 candidates each, as
lists of str, numpy string arrays and IntIds; the candidates drawn from 64 lists reused
(the working set of ``bench_engine_core.py``'s target case: ~12.6k distinct ids) or fresh
for every request (200k random ids: every lookup goes to memory). CPU µs per request
(``time.thread_time``, best of ``--repeats``, the two paths interleaved in one process).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from allocator import IntIds
from allocator.engine.candidates import resolve_batch
from allocator.registry import ArmRegistry

BASE = 10**9


def as_form(form: str, ids: list[str]) -> Any:
    if form == "list of str":
        return ids
    if form == "numpy string array":
        return np.array(ids)
    return IntIds([int(i) for i in ids])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--merchants", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| merchants | candidates | form | per request µs | whole batch µs | ratio |")
    print("|---|---|---|---|---|---|")
    for n in args.merchants:
        ids = [str(BASE + i) for i in range(n)]
        registry = ArmRegistry.build(ids, ["mini_shop"] * n)
        for label, n_lists in (("64 lists reused", 64), ("fresh per request", 1000)):
            lists = [[ids[i] for i in rng.choice(n, 200, replace=False)] for _ in range(n_lists)]
            for form in ("list of str", "numpy string array", "IntIds"):
                given = [as_form(form, lists[r % n_lists]) for r in range(1000)]
                np.testing.assert_array_equal(one_by_one(registry, given), whole(registry, given))
                best = {one_by_one: np.inf, whole: np.inf}
                for _ in range(args.repeats):
                    for fn in best:
                        best[fn] = min(best[fn], cpu_us(fn, registry, given) / len(given))
                a, b = best[one_by_one], best[whole]
                print(f"| {n:,} | {label} | {form} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


def one_by_one(registry: ArmRegistry, given: list[Any]) -> np.ndarray:
    return np.concatenate([registry.lookup(c) for c in given])


def whole(registry: ArmRegistry, given: list[Any]) -> np.ndarray:
    batch = resolve_batch(registry, given)
    assert batch is not None
    return batch[1]


def cpu_us(fn: Callable[..., Any], *args: Any) -> float:
    t = time.thread_time()
    fn(*args)
    return (time.thread_time() - t) * 1e6


if __name__ == "__main__":
    main()
