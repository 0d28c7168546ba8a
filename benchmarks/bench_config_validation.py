"""Validation time of the worst configurations the bounds allow, and of the default one.

Run from the repository root: ``python benchmarks/bench_config_validation.py``. Prints a
markdown table (best of ``--repeat`` runs, after one warm-up that loads the kernels). The
brute-force reference of the tests (every combination of scope values at every time) is
timed on the same floors with fewer attributes, as the baseline of this run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from allocator.config import parse_config  # noqa: E402
from allocator.config_files import load_yaml  # noqa: E402
from allocator.constraints import ConstraintSet  # noqa: E402
from allocator.errors import ConfigError  # noqa: E402
from allocator.serving.config import AllocatorConfig, load_allocator_config  # noqa: E402
from tests import naive  # noqa: E402

START, END = "2025-10-01T00:00:00Z", "2026-01-01T00:00:00Z"


def floor(
    name: str, v0: float, v1: float, scope: dict[str, list[str]] | None = None,
    kind: str = "floor", target: str | None = None, **sched: Any,
) -> dict[str, Any]:  # fmt: skip
    schedule = {"start": START, "end": END, "start_value": v0, "end_value": v1, **sched}
    return {"name": name, "kind": kind, "target": {"group": target or name},
            "scope": scope or {}, "schedule": schedule}  # fmt: skip


def scoped(n_attrs: int) -> list[dict[str, Any]]:
    """One floor per attribute, half rising from 0 and half falling to 0: they sum to 0.99
    for a request named by every scope, and their bound (1.98) forces the time sweep."""
    v = 0.99 / -(-n_attrs // 2)
    return [
        floor(f"g{i}", 0.0, v, {f"attr{i}": ["x", "y"]}, shape="linear") if i % 2
        else floor(f"g{i}", v, 0.0, {f"attr{i}": ["x", "y"]}, shape="linear")
        for i in range(n_attrs)
    ]  # fmt: skip


def steps(n_floors: int, n_caps: int) -> list[dict[str, Any]]:
    """Step floors of 10,000 stairs trading places (sum 0.99), and caps of 10,000 stairs
    above floors on the same groups."""
    v = 0.99 / -(-n_floors // 2)
    out = [floor(f"g{i}", 0.0 if i % 2 else v, v if i % 2 else 0.0, shape="step", steps=10_000)
           for i in range(n_floors)]  # fmt: skip
    out += [floor(f"cap{i}", 1.0, v + 0.01, kind="cap", target=f"g{i}", shape="step",
                  steps=10_000) for i in range(n_caps)]  # fmt: skip
    return out


def bomb(path: Path) -> Path:
    lines = ["anchors:", "  a0: &a0 [{id: m, group: g}, {id: m, group: g}, {id: m, group: g}]"]
    lines += [f"  a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 25)]
    path.write_text("\n".join(lines) + "\nengine: {policy: {kind: beta_bernoulli}}\narms: *a24\n")
    return path


def best(fn: Callable[[], object], repeat: int) -> tuple[float, str]:
    """Best wall time of ``fn`` in ms, and what it returned or raised."""
    times, outcome = [], ""
    for _ in range(repeat + 1):
        t = time.perf_counter()
        try:
            fn()
            outcome = "valid"
        except ConfigError as err:
            outcome = "refused: " + str(err).splitlines()[-1].strip()[:60]
        times.append(time.perf_counter() - t)
    return min(times[1:]) * 1e3, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-attrs", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())

    def contracts(items: list[dict[str, Any]]) -> Callable[[], object]:
        return lambda: parse_config(ConstraintSet, {"constraints": items})

    catalogue = {
        "engine": {"policy": {"kind": "beta_bernoulli"}},
        "arms": [{"id": f"m{i}", "group": f"g{i % 62}"} for i in range(100_000)],
        "constraints": {"constraints": [floor(f"g{i}", 0.02, 0.02, kind="cap") for i in range(62)]},
    }
    k = args.baseline_attrs
    small = parse_config(ConstraintSet, {"constraints": scoped(k)}).constraints
    rows = [
        ("default allocator config (configs/allocator_example.yaml)",
         lambda: load_allocator_config(ROOT / "configs" / "allocator_example.yaml")),
        (f"{k} scope attributes, 3^{k} requests", contracts(scoped(k))),
        (f"  brute force (tests/naive), {k} attributes (baseline)",
         lambda: naive.floor_sum_violation(small)),
        ("20 scope attributes, 3^20 requests", contracts(scoped(20))),
        ("entangled scopes, 2^16 request classes (the bound)", contracts([
            floor(f"g{i}{v}", 0.01, 0.01, {f"a{i}": [v], f"a{(i + 1) % 16}": [v]})
            for i in range(16) for v in ("p", "q")])),
        ("62 floors x 10,000 steps", contracts(steps(62, 0))),
        ("31 floors + 31 caps x 10,000 steps", contracts(steps(31, 31))),
        ("allocator config, 10^5 arms in 62 groups, each capped",
         lambda: parse_config(AllocatorConfig, catalogue)),
        ("YAML alias bomb (1 kB, 10^15 values)", lambda: load_yaml(bomb(tmp / "bomb.yaml"))),
    ]  # fmt: skip
    print("| config | validation (ms) | outcome |")
    print("|---|---:|---|")
    for label, fn in rows:
        ms, outcome = best(fn, args.repeat)
        print(f"| {label} | {ms:,.1f} | {outcome} |")


if __name__ == "__main__":
    main()
