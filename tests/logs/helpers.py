"""Record factories shared by the decision-log tests."""

from __future__ import annotations

from typing import Any

from allocator.logs import DecisionRecord, OutcomeRecord


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
