"""Hand-run benchmark of nonstationary replay's memory: the peak traced bytes of a replay
beyond its log, at two log lengths (flat when nothing grows with the log).

    python benchmarks/bench_replay_memory.py [--quick]
"""

from __future__ import annotations

import os

os.environ.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

import argparse
import tracemalloc

import numpy as np
from bench_replay import cpu_timed, fresh_engine, header, note, table

from allocator.config import BetaBernoulliConfig, LinearGaussianConfig
from allocator.replay import LoggedData, replay_nonstationary


def bare_log(k: int, n: int, d: int | None, seed: int) -> LoggedData:
    """n rounds over all k arms (no candidate lists: every arm a candidate) from a fixed
    skewed logger: the smallest log a replay reads, so 10^7 rows fit beside it."""
    rng = np.random.default_rng(seed)
    probs = 0.5 / k + 0.5 * rng.dirichlet(np.full(k, 0.5))
    actions = rng.choice(k, n, p=probs).astype(np.int64)
    return LoggedData(
        arm_ids=tuple(f"arm:{a}" for a in range(k)), actions=actions,
        rewards=(rng.random(n) < 0.05 + 0.01 * (actions % 5)).astype(np.float64),
        pscores=probs[actions], contexts=None if d is None else rng.normal(size=(n, d)),
    )  # fmt: skip


def bench_memory(quick: bool) -> str:
    """Peak traced bytes of a nonstationary replay beyond its log, at two log lengths."""
    sizes = {
        "Beta TS K=10": (10**5, 10**6) if quick else (10**6, 10**7),
        "linear TS d=16 K=20": (10**5, 3 * 10**5) if quick else (10**6, 3 * 10**6),
    }
    cases = [("Beta TS K=10", BetaBernoulliConfig(), 10, None),
             ("linear TS d=16 K=20", LinearGaussianConfig(n_features=16), 20, 16)]  # fmt: skip
    rows = []
    for label, cfg, k, d in cases:
        replay_nonstationary(fresh_engine(cfg, k, False), bare_log(k, 2_000, d, 99),
                             np.random.default_rng(0))  # fmt: skip
        for n in sizes[label]:
            data = bare_log(k, n, d, 0)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    print(bench_memory(parser.parse_args().quick), flush=True)


if __name__ == "__main__":
    main()
