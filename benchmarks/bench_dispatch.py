"""What it costs Python to call a numba kernel, by the shape of its arguments.

The engine passes each family's decide kernel its state as flat arrays (38–42 arguments:
requests, model, contracts, stream, scratch, outputs). This measures the alternatives on a
trivial kernel, in one run: flat arrays (16 and 38), the same 38 arrays packed into tuples,
and the flat call through the compiled overload's entry point (what "bound entry points"
would save). Run by hand: ``python benchmarks/bench_dispatch.py [--n 200000]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numba
import numpy as np
from numba import njit


@njit(nogil=True)
def _flat16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    return a0[0] + a15[0]


@njit(nogil=True)
def _flat38(
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18,
    a19, a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, a34, a35, a36,
    a37,
):  # fmt: skip
    return a0[0] + a37[0]


@njit(nogil=True)
def _tuples3(t1, t2, t3):
    return t1[0][0] + t3[-1][0]


@njit(nogil=True)
def _tuple1(t):
    return t[0][0] + t[37][0]


def per_call_us(fn: Callable[..., Any], args: tuple[Any, ...], n: int) -> float:
    fn(*args)
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn(*args)
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    arrays = [np.ones(4) for _ in range(38)]
    _flat38(*arrays)
    entry = next(iter(_flat38.overloads.values())).entry_point
    rows = {
        "16 flat arrays": per_call_us(_flat16, tuple(arrays[:16]), args.n),
        "38 flat arrays (the decide kernels' shape)": per_call_us(_flat38, tuple(arrays), args.n),
        "38 arrays as 3 tuples": per_call_us(
            _tuples3, (tuple(arrays[:13]), tuple(arrays[13:26]), tuple(arrays[26:])), args.n
        ),
        "38 arrays as 1 tuple": per_call_us(_tuple1, (tuple(arrays),), args.n),
        "38 flat arrays, compiled entry point": per_call_us(entry, tuple(arrays), args.n),
    }
    print(
        f"{datetime.now(UTC):%Y-%m-%d} | {platform.machine()} | {platform.python_version()} "
        f"| numpy {np.__version__} | numba {numba.__version__}\n"
    )
    print("| arguments | µs per call (best of 5) |")
    print("|---|---|")
    for name, us in rows.items():
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
