"""Write ``tests/logs/v2_log``: a decision log of schema version 2, as that code wrote it.

The parts were written, and ``expected.json`` read back, by the schema-2 writer and loader
(commit df8e4c5), so a later loader is checked against what a real version-2 log held, not
against itself. Regenerate only with a checkout that writes version 2::

    PYTHONPATH=/path/to/v2/checkout python -m tests.logs.make_v2_log tests/logs/v2_log
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from allocator.logs import DecisionLog, load_decision_log
from allocator.serving import Allocator
from tests.serving.helpers import T0, config, context_for

CANDS = ["taobao", "douyin", "merchant:0", "merchant:3", "merchant:5"]


def as_json(log: DecisionLog) -> dict[str, Any]:
    """Every array of ``log`` as JSON values (NaN as None)."""
    out: dict[str, Any] = {}
    for name in log.__dataclass_fields__:
        value = getattr(log, name)
        if isinstance(value, np.ndarray):
            value = [None if isinstance(v, float) and v != v else v for v in value.tolist()]
        elif name == "damaged":
            value = [list(d) for d in value]
        out[name] = value
    return out


def main(directory: Path) -> None:
    kind = "shared_linear"
    alloc = Allocator(config(kind), seed=4, log_dir=directory, replica="v2")
    reqs = [
        {"candidates": CANDS[: 2 + i % 4], "context": context_for(kind, i),
         "attrs": {"slot": "top"}, "timestamp": T0 + i, "request_id": f"q{i}"}
        for i in range(12)
    ]  # fmt: skip
    batch = alloc.decide_many(reqs[:8])
    for r in reqs[8:]:
        alloc.decide(**r)
    for i, decision_id in enumerate(batch.decision_ids[:5]):
        alloc.update(decision_id, {"order": float(i % 2)}, timestamp=T0 + 20 + i)
    alloc.close()
    (directory / "expected.json").write_text(json.dumps(as_json(load_decision_log(directory))))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
