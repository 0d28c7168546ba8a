"""Configs and drivers shared by the serving tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from allocator import IntIds
from allocator.serving import AllocatorConfig

T0 = 1_760_000_000.0
WINDOW = {"start": "2025-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
#: the Mini Shop tilt and a cold-start floor scoped to the "top" slot (add to a config's
#: constraints)
TILT_AND_COLD = (
    {"name": "tilt", "kind": "tilt", "target": {"group": "mini_shop"},
     "schedule": {**WINDOW, "start_value": 1.5}},
    {"name": "cold", "kind": "floor",
     "target": {"cold_in_group": "mini_shop", "n_min": 5, "max_age_s": 3600},
     "schedule": {**WINDOW, "start_value": 0.1}, "scope": {"slot": ["top"]}},
)  # fmt: skip
PARTNERS = ("taobao", "douyin")
DISJOINT = ("linear_gaussian", "logistic")
SHARED = ("shared_linear", "shared_logistic", "hybrid_linear", "hybrid_logistic")
#: the families an allocator serves with contexts and arm features, and without
KINDS = (
    "beta_bernoulli", "linear_gaussian", "shared_linear", "logistic", "shared_logistic",
    "hybrid_linear", "hybrid_logistic",
)  # fmt: skip
BINARY = ("beta_bernoulli", "logistic", "shared_logistic", "hybrid_logistic")


def config(kind: str = "beta_bernoulli", n_merchants: int = 6, **serving: Any) -> AllocatorConfig:
    policy: dict[str, Any] = {"kind": kind}
    arms: list[dict[str, Any]] = [{"id": p, "group": p} for p in PARTNERS]
    arms += [{"id": f"merchant:{i}", "group": "mini_shop"} for i in range(n_merchants)]
    if kind in DISJOINT:
        policy["n_features"] = 3
    if kind in SHARED:
        policy.update(n_context_features=3, n_arm_features=2)
        for i, arm in enumerate(arms):
            arm["features"] = [1.0, i / len(arms)]
    data = {
        "engine": {"policy": policy,
                   "objective": {"order": 1.0, "gmv": 0.0 if kind in BINARY else 0.01,
                                 "take_rates": {"taobao": 0.03, "mini_shop": 0.05}}},
        "arms": arms,
        "constraints": {"constraints": [{
            "name": "taobao_protected", "kind": "floor", "target": {"group": "taobao"},
            "schedule": {"start": "2025-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",
                         "start_value": 0.2},
        }]},
        "serving": {"reward_wait_s": 600.0, **serving},
    }  # fmt: skip
    if kind in DISJOINT + SHARED:
        data["serving"].setdefault("feature_names", ["age", "tier", "referral"])
    return AllocatorConfig.model_validate(data)


def contracts_config(kind: str, n_merchants: int = 30, **serving: Any) -> AllocatorConfig:
    """Two partner floors, the Mini Shop tilt and a cold-start floor scoped to one slot;
    a short backstop, so that some decisions are forced."""
    raw = config(kind, n_merchants=n_merchants, **serving).model_dump(mode="json")
    raw["constraints"].update(backstop=2.0, eta=0.01)
    raw["constraints"]["constraints"] += [
        {"name": "douyin_floor", "kind": "floor", "target": {"group": "douyin"},
         "schedule": {**WINDOW, "start_value": 0.1}},
        *TILT_AND_COLD,
    ]  # fmt: skip
    return AllocatorConfig.model_validate(raw)


def context_for(kind: str, i: int):
    if kind in DISJOINT + SHARED:
        return [1.0, (i % 7) / 7.0, float(i % 2)]
    return None


def without_epoch(decision_id: str) -> str:
    """``replica-epoch-counter`` as ``replica-counter``: the same decisions of two
    allocators (or of one and its restore) have equal ids up to their epochs."""
    replica, _, counter = decision_id.rsplit("-", 2)
    return f"{replica}-{counter}"


#: the forms candidate ids may take (besides int64 registry indices)
ID_FORMS = ("list", "tuple", "array", "intids")


def id_form(form: str, ids: list[str]) -> object:
    """Candidate ``ids`` (integer spellings, for ``intids``) in one of :data:`ID_FORMS`."""
    if form == "list":
        return ids
    if form == "tuple":
        return tuple(ids)
    if form == "array":
        return np.array(ids)
    return IntIds([int(i) for i in ids])
