"""Hand-run benchmark of replay's memory: the peak traced bytes of a nonstationary replay
beyond its log, at two log lengths (flat when nothing grows with the log), and of a frozen
evaluation with every estimator at 80 arms, per logged row.

    python benchmarks/bench_replay_memory.py [--quick] [--only nonstationary|frozen]
"""

from __future__ import annotations

import os

os.environ.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

import argparse
import tracemalloc

import numpy as np
from bench_replay import cpu_timed, fresh_engine, header, note, skewed_log, table

from allocator.config import BetaBernoulliConfig, LinearGaussianConfig
from allocator.replay import evaluate, replay_nonstationary


def bench_memory(quick: bool) -> str:
    """Peak traced bytes of a nonstationary replay beyond its log, at two log lengths; the
    log without candidate lists (every arm a candidate), so 10^7 rows fit beside it."""
    sizes = {
        "Beta TS K=10": (10**5, 10**6) if quick else (10**6, 10**7),
        "linear TS d=16 K=20": (10**5, 3 * 10**5) if quick else (10**6, 3 * 10**6),
    }
    cases = [("Beta TS K=10", BetaBernoulliConfig(), 10, None),
             ("linear TS d=16 K=20", LinearGaussianConfig(n_features=16), 20, 16)]  # fmt: skip
    rows = []
    for label, cfg, k, d in cases:
        replay_nonstationary(fresh_engine(cfg, k, False), skewed_log(k, 2_000, d, 99, lists=False),
                             np.random.default_rng(0))  # fmt: skip
        for n in sizes[label]:
            data = skewed_log(k, n, d, 0, lists=False)
            engine = fresh_engine(cfg, k, False)
            tracemalloc.start()
            res, _, cpu = cpu_timed(replay_nonstationary, engine, data, np.random.default_rng(0))
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            interval = f"{res.value:.4f} [{res.low:.4f}, {res.high:.4f}]"
            rows.append([label, f"{n:,}", f"{peak / 2**20:.1f}", f"{peak / n:.2f}",
                         f"{n / cpu:,.0f}", interval])  # fmt: skip
            note(f"memory {label} {n:,}: {peak / 2**20:.1f} MiB")
            del data, res
    cols = ["policy", "logged rows", "peak traced MiB (beyond the log)", "B per row",
            "rows/CPU s (traced)", "value [interval]"]  # fmt: skip
    return header("Nonstationary replay memory (tracemalloc)") + "\n" + table(cols, rows)


def bench_frozen(quick: bool) -> str:
    """Peak traced bytes per logged row of ``evaluate`` (IPS, SNIPS, DM, DR, SNDR with the
    cross-fitted reward model and the confidence sequences) of a linear TS target, 80 arms
    with every arm a candidate, d = 20: an Open-Bandit-sized action set."""
    k, d = 80, 20
    engine = {"policy": {"kind": "linear_gaussian", "n_features": d}}
    evaluate(
        skewed_log(k, 500, d, 99, lists=False),
        engine,
        reward_model="auto",
        rng=np.random.default_rng(0),
    )  # compiles
    rows = []
    for n in (2 * 10**4, 8 * 10**4) if quick else (10**5, 4 * 10**5):
        data = skewed_log(k, n, d, 0, lists=False)
        tracemalloc.start()
        ev, _, cpu = cpu_timed(
            lambda data: evaluate(data, engine, reward_model="auto", rng=np.random.default_rng(0)),
            data,
        )
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        dr = ev["dr"]
        rows.append([f"{n:,}", f"{peak / 2**20:.1f}", f"{peak / n:,.0f}", f"{n / cpu:,.0f}",
                     f"{dr.value:.4f} [{dr.low:.4f}, {dr.high:.4f}]"])  # fmt: skip
        note(f"frozen {n:,}: {peak / 2**20:.1f} MiB")
        del data, ev
    cols = ["logged rows", "peak traced MiB (beyond the log)", "B per row", "rows/CPU s (traced)",
            "DR [interval]"]  # fmt: skip
    return header("Frozen evaluation memory, 80 arms (tracemalloc)") + "\n" + table(cols, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", choices=["nonstationary", "frozen"], default=None)
    args = parser.parse_args()
    if args.only in (None, "nonstationary"):
        print(bench_memory(args.quick), flush=True)
    if args.only in (None, "frozen"):
        print(bench_frozen(args.quick), flush=True)


if __name__ == "__main__":
    main()
