"""A constrained policy replayed on the logged timeline: its contracts see each logged
request's time and attributes, and their queues advance as the policy's own service would.

The target distribution of a constrained policy is the contracts' distribution, which
depends on the queues, which depend on what the policy served before. Two ways to advance
them, one per use:

- **nonstationary replay** (a learning policy, :mod:`allocator.replay.nonstationary`): only
  accepted events advance the queues, with the logged action. The accepted events are the
  policy's own online rounds (same distribution), so the queues follow exactly the path
  they would have followed online on the thinned traffic;
- **a frozen target scored on every round** (:func:`constrained_distribution`): every round
  advances the queues by the target's expected service ``Σ π·membership``, exact in
  expectation; no draw is made, so the estimate carries no extra noise from one.

Both run :func:`allocator.kernels.nonstationary.contract_walk` over the engine's compiled
contracts; the policy's own probabilities come from the engine's batch entry. Arms'
first-seen times (cold-start floors) follow the log's timeline: every walked event counts.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from allocator.constraints import Contracts
from allocator.engine import Engine
from allocator.errors import InvalidInputError
from allocator.kernels import nonstationary as kns
from allocator.replay.dataset import F64, I64, LoggedData, check_candidates


def has_contracts(engine: Any) -> bool:
    """Whether ``engine`` is an :class:`Engine` with at least one contract in force."""
    return isinstance(engine, Engine) and bool(engine.contracts.names)


def request_inputs(engine: Engine, data: LoggedData) -> tuple[F64, I64]:
    """Times (n,) and attribute codes (n, A) of the logged requests for ``engine``'s
    contracts; refuses a log without timestamps or without an attribute a scope reads."""
    if data.timestamps is None:
        raise InvalidInputError(
            f"the contracts {list(engine.contracts.names)} follow schedules in time: the log "
            "needs timestamps (a foreign log maps a timestamp column)"
        )
    given = dict(data.attrs or {})
    missing = [a for a in engine.contracts.compiled.attrs if a not in given]
    if missing:
        raise InvalidInputError(
            f"contract scopes read the request attributes {missing}; the log carries "
            f"{sorted(given)} (a foreign log maps them under columns.attrs)"
        )
    times = np.ascontiguousarray(data.timestamps, dtype=np.float64)
    return times, engine.encode_attrs(given, data.n_rounds)


def contract_args(contracts: Contracts, engine: Engine, width: int) -> tuple[Any, ...]:
    """The contract arguments of the walk kernel, buffers sized for ``width`` candidates."""
    contracts.reserve(engine.registry.capacity, width)
    return contracts.kernel_args(engine.registry.arm_group, engine.policy.state.n_obs)


def constrained_distribution(engine: Engine, data: LoggedData) -> F64:
    """A frozen constrained target's probability of each candidate of each round (nnz,).

    Rounds are scored in time order; each advances a copy of the engine's queues by the
    target's expected service, so the engine itself (model, stream, queues) is unchanged.
    """
    ptr, idx = check_candidates(data)
    times, codes = request_inputs(engine, data)
    xs = None
    if engine.policy.n_features is not None:
        if data.contexts is None:
            raise InvalidInputError(
                f"{type(engine.policy).__name__} needs contexts; the logged data has none"
            )
        xs = data.contexts
    base = engine.decide_batch(ptr, idx, xs, times, draw=False).probabilities
    contracts = copy.deepcopy(engine.contracts)
    args = contract_args(contracts, engine, int(np.diff(ptr).max(initial=1)))
    out = np.empty_like(base)
    n = data.n_rounds
    none = np.zeros(n)
    hist, state = np.zeros(kns.N_BINS), kns.walk_state(0.0)
    kns.contract_walk(
        base, ptr, idx, np.zeros(n, dtype=np.int64), times, codes, none, none, False, False,
        0.5, 1.0, n, hist, state, none, np.zeros(n, dtype=np.bool_), out, *args,
    )  # fmt: skip
    return out
