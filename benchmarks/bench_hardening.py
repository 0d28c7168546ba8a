"""What the serving-core hardening costs the hot path: before/after, interleaved.

    python benchmarks/bench_hardening.py [--base COMMIT] [--rounds 5] [--n 20000]

A detached worktree of ``--base`` (default ``edabf12``, main before the hardening) and this
checkout are timed alternately, ``--rounds`` times each, each round in a fresh subprocess,
so that the shared machine's drift hits both alike. Cases (Beta–Bernoulli, K = 10 as string
ids, floor + cap + tilt on, event time):

- ``decide``: ``Allocator.decide`` p50 / p99 µs without a decision log;
- ``decide+log``: the same with the decision log on;
- ``update``: ``Allocator.update`` p50 µs of the outcome of a pending decision.

Prints a markdown table of medians over rounds and the after − before differences.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(tree: Path, n: int) -> dict[str, float]:
    sys.path.insert(0, str(tree))
    sys.path.insert(1, str(HERE))
    from bench_engine_core import T0, config_dict, pct

    from allocator.serving import Allocator

    ids = ["taobao", "douyin", *(f"merchant:{i}" for i in range(8))]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, log_dir in (("decide", None), ("decide+log", Path(tmp) / "log")):
            alloc = Allocator(config_dict("beta_bernoulli", 8), seed=1, log_dir=log_dir)
            t = float(T0)
            for _ in range(2_000):  # warm-up (compilation, caches)
                t += 1.0
                alloc.decide(ids, timestamp=t)
            lat, decided = [], []
            pc = time.perf_counter_ns
            gc.disable()
            for _ in range(n):
                t += 1.0
                start = pc()
                d = alloc.decide(ids, timestamp=t)
                lat.append((pc() - start) / 1e3)
                decided.append(d.decision_id)
            gc.enable()
            out[f"{case} p50"], out[f"{case} p99"] = pct(lat, 0.5), pct(lat, 0.99)
            if log_dir is None:
                lat = []
                gc.disable()
                for decision_id in decided[-500:]:  # pending: within reward_wait_s
                    start = pc()
                    status = alloc.update(decision_id, {"order": 1.0})
                    lat.append((pc() - start) / 1e3)
                    assert status == "applied", status
                gc.enable()
                out["update p50"] = pct(lat, 0.5)
            alloc.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="edabf12")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.n)))
        return
    repo = HERE.parent
    before = Path(tempfile.mkdtemp()) / "before"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--quiet", "--detach", str(before), args.base],
        check=True,
    )
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    try:
        for _ in range(args.rounds):
            for label, tree in (("before", before), ("after", repo)):
                res = subprocess.run(
                    [sys.executable, __file__, "--child", str(tree), "--n", str(args.n)],
                    check=True, capture_output=True, text=True, cwd=tempfile.gettempdir(),
                )  # fmt: skip
                runs[label].append(json.loads(res.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(before)], check=True
        )
    keys = list(runs["after"][0])
    med: dict[str, dict[str, float]] = {
        label: {k: statistics.median(r[k] for r in rs) for k in keys} for label, rs in runs.items()
    }
    print(f"Hardening cost, µs (median of {args.rounds} interleaved rounds of {args.n} calls)\n")
    print(f"| case | before ({args.base}) | after | after − before |")
    print("|---|---:|---:|---:|")
    for k in keys:
        b, a = med["before"][k], med["after"][k]
        print(f"| {k} | {b:.2f} | {a:.2f} | {a - b:+.2f} |")
    print("JSON " + json.dumps(med))


if __name__ == "__main__":
    main()
