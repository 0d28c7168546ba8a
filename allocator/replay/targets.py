"""Targets a user evaluates that are not a built policy: the logging policy itself, the
uniform policy, a given action distribution, or an engine config built over the log's arms.

Every target ends as the probability of each candidate of each round, (nnz,) aligned with
``data.candidates()``, which is what the estimators read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from allocator.config import EngineConfig, parse_config
from allocator.constraints import ConstraintSet
from allocator.engine import Engine
from allocator.errors import ConfigError, InvalidInputError
from allocator.policies import Policy, make_policy
from allocator.registry import ArmRegistry
from allocator.replay.dataset import F64, LoggedData, check_candidates

#: names of the targets that need no policy
NAMED_TARGETS = ("logging", "uniform")


def policy_for_log(engine: EngineConfig | Mapping[str, Any], data: LoggedData, seed: int) -> Policy:
    """A fresh policy of ``engine`` over the log's arms (index i = the log's arm i), with the
    log's arm features (from a catalogue) for the families that weigh them."""
    if isinstance(engine, Mapping):
        engine = parse_config(EngineConfig, dict(engine), "<engine mapping>")
    if not isinstance(engine, EngineConfig):
        raise ConfigError(
            f"engine must be an EngineConfig or a mapping, got {type(engine).__name__}"
        )
    feats = None
    if engine.policy.USES_ARM_FEATURES:
        feats = data.arm_features
        if feats is None:
            raise ConfigError(
                f"{engine.policy.kind} needs arm features, which logs do not carry: give the "
                "arms' catalogue (replay config: logs.arms_file)"
            )
    groups = data.arm_groups or ("default",) * data.n_arms
    reg = ArmRegistry.build(list(data.arm_ids), list(groups))
    return make_policy(engine.policy, reg, seed, arm_features=feats)


def named_target(name: str, data: LoggedData) -> F64:
    """``logging``: the logged candidate distributions; ``uniform``: 1/|C| per candidate."""
    ptr, _ = check_candidates(data)
    if name == "uniform":
        sizes = np.diff(ptr)
        return np.repeat(1.0 / sizes, sizes)
    if name == "logging":
        if data.cand_prob is None:
            raise InvalidInputError(
                "target 'logging' needs every candidate's logging probability (the "
                "allocator's own logs carry it; a foreign log needs a candidate list with "
                "probabilities); this log has only the chosen action's propensity, whose "
                "on-policy value is simply its mean reward"
            )
        return np.ascontiguousarray(data.cand_prob, dtype=np.float64)
    raise InvalidInputError(f"target {name!r}: expected one of {list(NAMED_TARGETS)}")


def dense_target(matrix: np.ndarray, data: LoggedData) -> F64:
    """An (n, k) action distribution (rows: rounds, columns: the log's arms) restricted to
    each round's candidates; mass on a non-candidate is refused, not silently dropped."""
    ptr, idx = check_candidates(data)
    n, k = data.n_rounds, data.n_arms
    if matrix.shape != (n, k):
        raise InvalidInputError(
            f"target matrix has shape {matrix.shape}, expected ({n}, {k}): one row per "
            "logged round, one column per arm of the log"
        )
    rows = np.repeat(np.arange(n), np.diff(ptr))
    prob = np.ascontiguousarray(matrix[rows, idx], dtype=np.float64)
    outside = np.abs(matrix).sum(axis=1) - np.bincount(rows, weights=np.abs(prob), minlength=n)
    bad = np.flatnonzero(outside > 1e-6)
    if bad.size:
        raise InvalidInputError(
            f"target matrix puts mass on arms that were not candidates: rows "
            f"{bad[:5].tolist()} (mass {outside[bad[:5]].tolist()})"
        )
    return prob


def engine_for_log(
    engine: EngineConfig | Mapping[str, Any], constraints: ConstraintSet | None,
    data: LoggedData, seed: int,
) -> Engine:  # fmt: skip
    """:func:`policy_for_log` under ``constraints`` (a contract what-if is another set)."""
    return Engine(policy_for_log(engine, data, seed), constraints)
