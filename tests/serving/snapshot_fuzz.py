"""Child process of the corrupted-bytes fuzz: ``python snapshot_fuzz.py GENUINE N SEED``.

Each of N seeded mutants of the genuine file (bit flips, overwritten, deleted or repeated
runs of bytes, truncations; half of them aimed at the zip headers and directory at both
ends) must either raise :class:`SnapshotError` or load as exactly the genuine state (a flip
in a field nothing reads). Anything else ends this process with a traceback or a signal.
Prints the counts as JSON.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from allocator import Allocator, SnapshotError


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    b = bytearray(data)
    edge = 2048
    if rng.random() < 0.5:  # the local headers at the start or the directory at the end
        lo = int(rng.integers(0, min(edge, len(b))))
        at = lo if rng.random() < 0.5 else len(b) - 1 - lo
    else:
        at = int(rng.integers(0, len(b)))
    run = int(rng.integers(1, 17))
    kind = ("flip", "overwrite", "truncate", "delete", "repeat")[int(rng.integers(5))]
    if kind == "flip":
        for _ in range(int(rng.integers(1, 4))):
            pos = min(len(b) - 1, at + int(rng.integers(0, run)))
            b[pos] ^= 1 << int(rng.integers(8))
    elif kind == "overwrite":
        b[at : at + run] = rng.integers(0, 256, len(b[at : at + run]), dtype=np.uint8).tobytes()
    elif kind == "truncate":
        del b[at:]
    elif kind == "delete":
        del b[at : at + run]
    else:
        b[at:at] = b[at : at + run]
    return kind, bytes(b)


def state(alloc: Allocator) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = alloc.snapshot_state()
    return arrays, {k: v for k, v in meta.items() if k != "epoch"}


def same(a: tuple[dict[str, np.ndarray], dict], b: tuple[dict[str, np.ndarray], dict]) -> bool:
    """Equal meta and byte-identical arrays (NaN slots included)."""
    x, y = a[0], b[0]
    return a[1] == b[1] and x.keys() == y.keys() and all(
        x[k].dtype == y[k].dtype and x[k].shape == y[k].shape and x[k].tobytes() == y[k].tobytes()
        for k in x
    )  # fmt: skip


def main(genuine: Path, n: int, seed: int) -> Counter[str]:
    data = genuine.read_bytes()
    reference = state(Allocator.load(genuine))
    rng = np.random.default_rng(seed)
    mutant = genuine.with_name("mutant.npz")
    counts: Counter[str] = Counter()
    for i in range(n):
        kind, mutated = mutate(data, rng)
        mutant.write_bytes(mutated)
        try:
            loaded = Allocator.load(mutant)
        except SnapshotError:
            counts["refused"] += 1
            continue
        if not same(state(loaded), reference):
            raise AssertionError(f"mutant {i} ({kind}) loaded as a different state")
        counts["identical"] += 1
    return counts


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
