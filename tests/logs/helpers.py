"""Record factories shared by the decision-log tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from allocator.decisions import Decision
from allocator.logs import DecisionLogWriter, DecisionRecord, OutcomeRecord
from allocator.logs.parts import parse_name


def decision(i: int = 0, **changes: Any) -> DecisionRecord:
    """A valid decision record; ``changes`` override fields."""
    fields: dict[str, Any] = {
        "decision_id": f"r0-{i:x}",
        "request_id": f"req-{i}",
        "timestamp": 1_700_000_000.0 + i,
        "arm_id": "taobao",
        "arm_index": 0,
        "group": "taobao",
        "propensity": 0.5,
        "forced": False,
        "model_version": 3,
        "policy_kind": "beta_bernoulli",
        "candidates": ("taobao", "shop:7", "jd"),
        "candidate_probabilities": (0.5, 0.25, 0.25),
        "context": None,
        "attrs": {"category": "shoes", "slot": "top"},
        "adjusted_by": (),
    }
    fields.update(changes)
    return DecisionRecord(**fields)


def outcome(i: int = 0, **changes: Any) -> OutcomeRecord:
    """A valid outcome record for ``decision(i)``; ``changes`` override fields."""
    fields: dict[str, Any] = {
        "decision_id": f"r0-{i:x}",
        "timestamp": 1_700_000_060.0 + i,
        "click": 1.0,
        "order": 0.0,
        "gmv": 0.0,
        "reward": 0.25,
        "source": "feedback",
    }
    fields.update(changes)
    return OutcomeRecord(**fields)


def v2_record(
    d: Decision, request: dict[str, Any], probabilities: np.ndarray, kind: str
) -> DecisionRecord:
    """The schema-2 record of a single decision made for ``request`` (the keyword
    arguments of ``Allocator.decide``), as the single path wrote it before schema 3:
    every candidate id spelled."""
    context = request.get("context")
    return DecisionRecord(
        decision_id=d.decision_id, request_id=request.get("request_id"), timestamp=d.timestamp,
        arm_id=d.arm_id, arm_index=d.arm_index, group=d.group, propensity=d.propensity,
        forced=d.forced, model_version=d.model_version, policy_kind=kind,
        candidates=list(request["candidates"]), candidate_probabilities=probabilities,
        context=None if context is None else np.asarray(context, dtype=np.float64),
        attrs=request.get("attrs") or {}, adjusted_by=d.adjusted_by,
    )  # fmt: skip


def copy_outcomes(directory: Path, writer: DecisionLogWriter) -> None:
    """Every outcome row of the log in ``directory``, in part order, written by ``writer``
    (the outcome stream of a v2 twin: outcomes are the same in both versions)."""
    parts = sorted(directory.glob("outcomes-*"), key=lambda p: parse_name(p.name).seq)
    rows = pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()
    writer.write_outcomes([OutcomeRecord(**row) for row in rows])
