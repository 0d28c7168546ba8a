"""Rejection replay (Li et al., 2011) of a policy that keeps learning while it is evaluated.

Walk the logged rounds in order; the policy chooses among the round's candidates, and only
when it picks the logged arm is the round accepted: its reward counts and the policy learns
from it. When every round was logged uniformly over its candidates, the accepted rounds are
distributed exactly as the rounds the policy would have met online, so their mean reward
estimates its online value. On any other log the policy would learn from, and be scored on,
the logger's favourite arms: the result is biased, so this module refuses it.

An ε-mixture log (logging ``p = ε/|C| + (1 − ε)·π``, e.g. the allocator's own logs with
``epsilon > 0``) contains a uniform log: keeping round ``i`` with probability
``(ε/|C_i|) / p_i`` keeps every candidate with the same probability ``ε/|C_i|``, i.e. a
uniformly logged ε share of the rounds, which is then replayed.

Rounds are decided in batches through the policy's batch pipeline and the walk stops at the
first accepted round whose update can change later decisions (any update of a contextual
family; a refresh of a context-free one); the decision stream is rewound to just after it
and the walk resumes there. The result is exactly that of deciding round by round.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from allocator.errors import EvaluationRefused, InvalidInputError
from allocator.policies.base import Policy
from allocator.replay.dataset import F64, I64, LoggedData, check_candidates
from allocator.replay.evaluate import check_arms, logged_positions

#: tolerance of the uniformity and ε-mixture checks on logged probabilities
UNIFORM_TOL = 1e-9

_ADVICE = (
    "Replaying a learning policy on non-uniformly logged rounds is biased: it learns from, "
    "and is scored on, the rounds the logger favoured. Evaluate a frozen policy with "
    "IPS / DR (allocator.replay.evaluate) instead, or log with an ε-uniform component "
    "(policy epsilon > 0) and pass uniform_epsilon=ε."
)


class ReplayResult(NamedTuple):
    """Mean reward of the accepted rounds with a normal-approximation interval.

    ``n_kept`` rounds survived the ε-slice (all of them without one); ``curve`` (n_accepted,)
    is the running mean reward after each accepted round.
    """

    value: float
    low: float
    high: float
    n_accepted: int
    n_rounds: int
    n_kept: int
    curve: F64


def _refuse(what: str, rows: np.ndarray, detail: str) -> EvaluationRefused:
    detail = f" {detail}" if detail else ""
    return EvaluationRefused(f"{what}; first offending rows {rows[:5].tolist()}{detail}. {_ADVICE}")


def _uniform_rows(data: LoggedData, ptr: I64, sizes: F64) -> None:
    """Refuse unless every round was logged uniformly over its candidates."""
    if data.cand_prob is not None:
        dev = np.abs(
            np.asarray(data.cand_prob, dtype=np.float64)
            - np.repeat(1.0 / sizes, sizes.astype(np.int64))
        )
        worst = np.maximum.reduceat(dev, ptr[:-1])
        bad = np.flatnonzero(worst > UNIFORM_TOL)
        if bad.size:
            raise _refuse(
                "the logging distribution is not uniform over the candidates",
                bad,
                f"(largest deviation from 1/|C| per row: {worst[bad[:5]].tolist()})",
            )
    pscores = np.asarray(data.pscores, dtype=np.float64)
    bad = np.flatnonzero(np.abs(pscores * sizes - 1.0) > UNIFORM_TOL)
    if bad.size:
        raise _refuse(
            "the logged propensities are not 1/|candidates|",
            bad,
            f"(pscore {pscores[bad[:5]].tolist()} with {sizes[bad[:5]].astype(int).tolist()} "
            "candidates)",
        )


def _epsilon_slice(
    data: LoggedData, ptr: I64, sizes: F64, eps: float, rng: np.random.Generator
) -> np.ndarray:
    """Rows kept by rejection sampling of the uniform component of an ε-mixture log."""
    floor = eps / sizes
    if data.cand_prob is not None:
        low = (
            np.asarray(data.cand_prob, dtype=np.float64)
            < np.repeat(floor, sizes.astype(np.int64)) - UNIFORM_TOL
        )
        bad = np.flatnonzero(np.logical_or.reduceat(low, ptr[:-1]))
        if bad.size:
            raise _refuse(
                f"the log is not an ε-mixture with ε = {eps}: some candidate has logging "
                "probability below ε/|C|",
                bad,
                "",
            )
    keep = floor / np.asarray(data.pscores, dtype=np.float64)
    bad = np.flatnonzero(keep > 1.0 + UNIFORM_TOL)
    if bad.size:
        raise _refuse(
            f"the log is not an ε-mixture with ε = {eps}: pscore below ε/|C|",
            bad,
            f"(pscore {np.asarray(data.pscores)[bad[:5]].tolist()}, ε/|C| "
            f"{floor[bad[:5]].tolist()})",
        )
    return np.flatnonzero(rng.random(data.n_rounds) < keep)


def check_replay_inputs(policy: Policy, data: LoggedData) -> tuple[I64, I64, I64, F64 | None]:
    """What a learning replay of ``policy`` on ``data`` reads, checked: candidates (CSR),
    the flat position of each logged action, the contexts the policy needs (or None);
    propensities in (0, 1] and rewards in the policy's domain (it will learn from them)."""
    check_arms(policy, data)
    ptr, idx = check_candidates(data)
    pos = logged_positions(data, ptr, idx)
    pscores = np.asarray(data.pscores, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(pscores) | (pscores <= 0.0) | (pscores > 1.0))
    if bad.size:
        raise InvalidInputError(f"pscores must be in (0, 1]; first bad rows {bad[:5].tolist()}")
    policy.check_rewards(np.asarray(data.rewards, dtype=np.float64))
    if policy.n_features is None:
        return ptr, idx, pos, None
    if data.contexts is None:
        raise InvalidInputError(f"{type(policy).__name__} needs contexts; the log has none")
    return ptr, idx, pos, np.ascontiguousarray(data.contexts, dtype=np.float64)


def replay_learning_policy(
    policy: Policy,
    data: LoggedData,
    rng: np.random.Generator,
    uniform_epsilon: float | None = None,
    *,
    alpha: float = 0.05,
) -> ReplayResult:
    """Online value of a learning ``policy`` estimated by rejection replay of ``data``.

    ``policy`` is taught as it goes (pass a fresh one). The log must be uniform over each
    round's candidates, or an ε-mixture whose ``uniform_epsilon`` is given; otherwise this
    raises :class:`EvaluationRefused` rather than return a biased number. ``rng`` draws the
    ε-slice. The interval is a normal approximation over the accepted rewards
    (mean ± z·sd/√n_accepted): it treats them as independent, which they are given the
    policy's state, not across its learning.
    """
    if not isinstance(policy, Policy):
        raise InvalidInputError(f"policy must be a Policy, got {type(policy).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    if not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha = {alpha!r}: expected a number in (0, 1)")
    if uniform_epsilon is not None and (
        not isinstance(uniform_epsilon, (int, float))
        or isinstance(uniform_epsilon, bool)
        or not 0.0 < uniform_epsilon <= 1.0
    ):
        raise InvalidInputError(
            f"uniform_epsilon = {uniform_epsilon!r}: expected a number in (0, 1]"
        )
    ptr, idx, pos, contexts = check_replay_inputs(policy, data)
    rewards = np.asarray(data.rewards, dtype=np.float64)
    sizes = np.diff(ptr).astype(np.float64)
    if uniform_epsilon is None:
        _uniform_rows(data, ptr, sizes)
        kept = np.arange(data.n_rounds)
    else:
        kept = _epsilon_slice(data, ptr, sizes, float(uniform_epsilon), rng)
    accepted = _walk(policy, ptr, idx, idx[pos], rewards, contexts, kept)
    n_acc = len(accepted)
    if n_acc == 0:
        raise EvaluationRefused(
            f"no round was accepted out of {kept.shape[0]} replayed: the log is too short "
            "to say anything about this policy"
        )
    r = np.asarray(accepted)
    value = float(r.mean())
    if n_acc > 1:
        half = NormalDist().inv_cdf(1.0 - alpha / 2.0) * float(r.std(ddof=1)) / np.sqrt(n_acc)
        low, high = float(value - half), float(value + half)
    else:
        low = high = float("nan")
    curve = np.cumsum(r) / np.arange(1, n_acc + 1)
    return ReplayResult(value, low, high, n_acc, data.n_rounds, int(kept.shape[0]), curve)


def _walk(
    policy: Policy, ptr: I64, idx: I64, logged: I64, rewards: F64, contexts: F64 | None,
    rounds: I64,
) -> list[float]:  # fmt: skip
    """Rewards of the accepted ``rounds``, in order, teaching ``policy`` as it goes.

    Each pass decides up to ``size`` rounds in one batch; ``size`` grows while passes run
    to their end and shrinks to about twice the rounds consumed when one stops early.
    """
    accepted: list[float] = []
    sizes = np.diff(ptr)
    i, size = 0, 64
    while i < rounds.shape[0]:
        rows = rounds[i : i + size]
        counts = sizes[rows]
        sub_ptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=sub_ptr[1:])
        flat = np.repeat(ptr[rows] - sub_ptr[:-1], counts) + np.arange(sub_ptr[-1])
        xs = None if contexts is None else contexts[rows]
        start = policy.stream_position
        out = policy.decide_batch(sub_ptr, idx[flat], xs)
        used = rows.shape[0]
        for j in np.flatnonzero(out.arms == logged[rows]).tolist():
            r = int(rows[j])
            version = policy.version
            policy.update(int(logged[r]), float(rewards[r]), None if xs is None else xs[j])
            accepted.append(float(rewards[r]))
            if policy.UPDATES_MOVE_DECISIONS or policy.version != version:
                used = j + 1
                break
        if used < rows.shape[0]:
            policy.seek_stream(start + used)
            size = max(16, 2 * used)
        else:
            size = min(8192, 2 * size)
        i += used
    return accepted
