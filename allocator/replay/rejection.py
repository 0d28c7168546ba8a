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

The walk is compiled (:mod:`allocator.replay.walks`): each round is decided by the
family's own kernel as a live ``decide`` would, and Python runs only at refreshes. The log
is read in chunks of :data:`CHUNK` rounds, twice: once to check it whole (a refused log
teaches the policy nothing), once to replay it, so memory beyond the log's own columns and
the result stays O(chunk) however long the log.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from allocator.errors import EvaluationRefused, InvalidInputError
from allocator.policies.base import Policy
from allocator.replay.dataset import F64, I64, LoggedData, check_candidates
from allocator.replay.estimators import MIN_PSCORE
from allocator.replay.evaluate import check_arms, logged_positions
from allocator.replay.walks import Walker

#: tolerance of the uniformity and ε-mixture checks on logged probabilities
UNIFORM_TOL = 1e-9
#: logged rounds checked and replayed per chunk (bounds the replay's own memory)
CHUNK = 1 << 16

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


def _uniform_rows(data: LoggedData, ptr: I64, sizes: F64, lo: int) -> None:
    """Refuse unless every round was logged uniformly over its candidates (``data`` holds
    the log's rounds from ``lo``)."""
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
                lo + bad,
                f"(largest deviation from 1/|C| per row: {worst[bad[:5]].tolist()})",
            )
    pscores = np.asarray(data.pscores, dtype=np.float64)
    bad = np.flatnonzero(np.abs(pscores * sizes - 1.0) > UNIFORM_TOL)
    if bad.size:
        raise _refuse(
            "the logged propensities are not 1/|candidates|",
            lo + bad,
            f"(pscore {pscores[bad[:5]].tolist()} with {sizes[bad[:5]].astype(int).tolist()} "
            "candidates)",
        )


def _mixture_rows(data: LoggedData, ptr: I64, sizes: F64, eps: float, lo: int) -> None:
    """Refuse unless every round can be an ε-mixture's: every candidate logged with
    probability at least ε/|C| (``data`` holds the log's rounds from ``lo``)."""
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
                lo + bad,
                "",
            )
    pscores = np.asarray(data.pscores, dtype=np.float64)
    bad = np.flatnonzero(floor / pscores > 1.0 + UNIFORM_TOL)
    if bad.size:
        raise _refuse(
            f"the log is not an ε-mixture with ε = {eps}: pscore below ε/|C|",
            lo + bad,
            f"(pscore {pscores[bad[:5]].tolist()}, ε/|C| {floor[bad[:5]].tolist()})",
        )


def _checked_chunk(
    policy: Policy, data: LoggedData, lo: int, eps: float | None
) -> tuple[LoggedData, I64, I64, I64, F64]:  # fmt: skip
    """Rounds ``lo:lo + CHUNK`` of ``data`` checked as :func:`check_replay_inputs` and the
    uniformity (or ε-mixture) rule do: the chunk, its candidates (CSR), logged positions
    and contexts ((m, 0) for a context-free policy). Errors count rounds from ``lo``."""
    sub = data.take(lo, min(data.n_rounds, lo + CHUNK))
    try:
        ptr, idx, pos, contexts = check_replay_inputs(policy, sub, checked_arms=True)
        xs = policy.context_rows(contexts, sub.n_rounds)
    except InvalidInputError as err:
        if lo == 0:
            raise
        raise type(err)(f"logged rounds from {lo} (rows counted from there): {err}") from None
    sizes = np.diff(ptr).astype(np.float64)
    if eps is None:
        _uniform_rows(sub, ptr, sizes, lo)
    else:
        _mixture_rows(sub, ptr, sizes, eps, lo)
    return sub, ptr, idx, pos, xs


def check_replay_inputs(
    policy: Policy, data: LoggedData, checked_arms: bool = False
) -> tuple[I64, I64, I64, F64 | None]:  # fmt: skip
    """What a learning replay of ``policy`` on ``data`` reads, checked: candidates (CSR),
    the flat position of each logged action, the contexts the policy needs (or None);
    propensities in (0, 1] and rewards in the policy's domain (it will learn from them), or,
    for a policy that learns the events (``LEARNS_EVENTS``), the log's ``outcomes``.
    ``checked_arms``: the arm catalogues were already compared."""
    if not checked_arms:
        check_arms(policy, data)
    ptr, idx = check_candidates(data)
    pos = logged_positions(data, ptr, idx)
    pscores = np.asarray(data.pscores, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(pscores) | (pscores < MIN_PSCORE) | (pscores > 1.0))
    if bad.size:
        raise InvalidInputError(
            f"pscores must be in (0, 1]; first bad rows {bad[:5].tolist()} (at least "
            f"{MIN_PSCORE:.4g}: 1 / pscore must be finite)"
        )
    rewards = np.asarray(data.rewards, dtype=np.float64)
    if policy.LEARNS_EVENTS:
        if data.outcomes is None:
            raise InvalidInputError(
                f"{type(policy).__name__} learns from the events (click, order, gmv); this "
                "log has only a reward per round (the allocator's decision logs carry them: "
                "from_decision_log)"
            )
        events = np.asarray(data.outcomes, dtype=np.float64)
        policy.check_outcomes(events[:, 0], events[:, 1], events[:, 2], rewards)
    else:
        policy.check_rewards(rewards)
    if policy.n_features is None:
        return ptr, idx, pos, None
    if data.contexts is None:
        raise InvalidInputError(f"{type(policy).__name__} needs contexts; the log has none")
    return ptr, idx, pos, np.ascontiguousarray(data.contexts, dtype=np.float64)


def _replay_chunks(
    policy: Policy, data: LoggedData, rng: np.random.Generator, eps: float | None
) -> tuple[list[F64], int]:
    """The checked log replayed chunk by chunk: each chunk's accepted rewards, and the
    rounds kept."""
    walker = Walker(policy)
    accepted, n_kept = [], 0
    for lo in range(0, data.n_rounds, CHUNK):
        sub, ptr, idx, pos, xs = _checked_chunk(policy, data, lo, eps)
        if eps is None:
            kept = np.arange(sub.n_rounds, dtype=np.int64)
        else:
            sizes = np.diff(ptr).astype(np.float64)
            pscores = np.asarray(sub.pscores, dtype=np.float64)
            kept = np.flatnonzero(rng.random(sub.n_rounds) < eps / sizes / pscores)
        rewards = np.ascontiguousarray(sub.rewards, dtype=np.float64)
        actions = np.ascontiguousarray(sub.actions, dtype=np.int64)
        rows = walker.rounds(ptr, idx, pos, actions, rewards, xs, kept, sub.outcomes)
        accepted.append(rewards[rows])
        n_kept += kept.shape[0]
    return accepted, n_kept


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
    eps = None if uniform_epsilon is None else float(uniform_epsilon)
    check_arms(policy, data)
    width = 1
    for lo in range(0, data.n_rounds, CHUNK):
        width = max(width, int(np.diff(_checked_chunk(policy, data, lo, eps)[1]).max(initial=1)))
    with policy.bank_in_use(width):
        accepted, n_kept = _replay_chunks(policy, data, rng, eps)
    r = np.concatenate(accepted) if accepted else np.zeros(0)
    del accepted  # the accepted rewards are the result's size: hold them once
    n_acc = r.shape[0]
    if n_acc == 0:
        raise EvaluationRefused(
            f"no round was accepted out of {n_kept} replayed: the log is too short "
            "to say anything about this policy"
        )
    value = float(r.mean())
    if n_acc > 1:
        half = NormalDist().inv_cdf(1.0 - alpha / 2.0) * float(r.std(ddof=1)) / np.sqrt(n_acc)
        low, high = float(value - half), float(value + half)
    else:
        low = high = float("nan")
    curve = np.cumsum(r)
    curve /= np.arange(1, n_acc + 1)
    return ReplayResult(value, low, high, n_acc, data.n_rounds, n_kept, curve)
