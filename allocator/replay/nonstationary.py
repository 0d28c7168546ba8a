"""Nonstationary replay of a learning policy on non-uniform logs (Dudík, Erhan, Langford,
Li 2012, "Sample-efficient nonstationary policy evaluation for contextual bandits").

In time order, the target computes its decision distribution ``d`` on every logged event.
Every event contributes a doubly robust term ``q̂·d + d(a)/p(a)·(r − q̂(a))`` (``q̂`` fitted
on earlier rounds only); the event is then accepted with probability ``c·d(a)/p(a)``, and
only accepted events teach the policy. The accepted events are distributed as the rounds
the policy would have met online, so the policy's state after ``t`` acceptances is that of
``t`` online rounds, and the ``c``-weighted mean of the DR terms estimates its average
online value over those rounds. ``c`` is fixed (exact when ``c <= p/d`` on every event) or
adaptive, as in the paper (a low quantile of the ratios seen, see
:mod:`allocator.kernels.nonstationary`); the share of events whose acceptance probability
had to be cut to one is reported with the result. Rejection replay
(:mod:`allocator.replay.rejection`) is the special case of a uniform log with
``c = min p``.

Without contracts the walk is compiled (:mod:`allocator.replay.walks`): each event's
probabilities come from the family's own decide kernel, without a draw, and accepted
events are folded in by its update kernel; Python runs only at refreshes. With contracts
the policy is frozen between updates that can move its decisions (every update of a
contextual family, a refresh of a context-free one), so one ``decide_batch(draw=False)``
gives the policy's part of ``d`` for a chunk of events and the contracts' walk (a numba
kernel) runs until the next such update.

Each DR term's conditional mean is the value of the policy's state at its event, which
drifts as it learns, so the interval is an empirical-Bernstein sequence valid for a
drifting mean (:func:`allocator.replay.confidence.drifting_mean_interval`);
a sequence for one fixed mean would exclude the learning curve's average.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from allocator.engine import Engine
from allocator.errors import EvaluationRefused, InvalidInputError
from allocator.inputs import as_index_array
from allocator.kernels import nonstationary as kns
from allocator.kernels import ope as kope
from allocator.policies.base import Policy
from allocator.replay.confidence import PastOnlyValues, dr_terms
from allocator.replay.contracts import contract_args, has_contracts, request_inputs
from allocator.replay.dataset import F64, I64, LoggedData
from allocator.replay.evaluate import check_arms, logged_positions, reward_range_of
from allocator.replay.rejection import check_replay_inputs
from allocator.replay.reward_model import RewardModel, make_reward_model
from allocator.replay.trace import Trace, nth_accepted, pieces, spilled, summarise
from allocator.replay.walks import Walker, learn_rounds

#: logged events checked and walked per chunk: the replay's per-candidate and per-event
#: arrays are a chunk's (its per-event trace goes to a temporary file, see
#: :mod:`allocator.replay.trace`)
CHUNK = 1 << 16
#: fewest events a chunk's probabilities are computed for (a policy that moves on every
#: acceptance walks ~1/acceptance-rate events per chunk)
MIN_CHUNK = 16
#: default quantile of the adaptive acceptance constant (the paper's experiments: 0.01–0.1)
DEFAULT_QUANTILE = 0.05


class NonstationaryResult(NamedTuple):
    """The policy's average online value over its ``n_accepted`` replayed rounds.

    ``acceptance_rate`` is accepted / walked events; ``truncated_share`` the share of
    walked events whose ``c·d/p`` exceeded one (a source of bias of the adaptive ``c``);
    ``ess`` the effective sample size of the weights ``d/p`` of the walked events.
    """

    value: float
    low: float
    high: float
    n_accepted: int
    n_events: int
    n_rounds: int
    acceptance_rate: float
    truncated_share: float
    ess: float
    trace: Trace


def _check_options(c: Any, quantile: Any, c_max: Any, alpha: Any) -> bool:
    """Whether ``c`` is adaptive; raise on any bad option."""
    if not isinstance(quantile, (int, float)) or not 0.0 < quantile < 1.0:
        raise InvalidInputError(f"quantile = {quantile!r}: expected a number in (0, 1)")
    if not isinstance(c_max, (int, float)) or not 0.0 < c_max <= 1.0:
        raise InvalidInputError(f"c_max = {c_max!r}: expected a number in (0, 1]")
    if not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise InvalidInputError(f"alpha = {alpha!r}: expected a number in (0, 1)")
    if c == "adaptive":
        return True
    if isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 < c <= 1.0:
        return False
    raise InvalidInputError(f"c = {c!r}: expected 'adaptive' or a number in (0, 1]")


def replay_nonstationary(
    policy: Policy | Engine,
    data: LoggedData,
    rng: np.random.Generator,
    *,
    c: float | str = "adaptive",
    quantile: float = DEFAULT_QUANTILE,
    c_max: float = 1.0,
    reward_model: RewardModel | str | None = "auto",
    reward_range: Any = None,
    alpha: float = 0.05,
    max_accepted: int | None = None,
    uniforms: F64 | None = None,
) -> NonstationaryResult:
    """Replay the learning ``policy`` (pass a fresh one: it is taught) on ``data``.

    An :class:`Engine` with contracts is replayed with them on the log's timestamps and
    request attributes (:mod:`allocator.replay.contracts`): the target distribution is the
    contracts' distribution, and accepted events advance the queues with the logged action.

    ``c`` is ``'adaptive'`` (the ``quantile`` of past ratios ``p/d``, at most ``c_max``) or
    a fixed number; ``reward_model`` serves the DR terms (None: IPS terms); the walk stops
    after ``max_accepted`` acceptances when given. ``uniforms`` (n,) replaces the draws
    from ``rng`` (policies compared on common draws, see :func:`compare_nonstationary`).
    """
    engine = policy if isinstance(policy, Engine) and has_contracts(policy) else None
    if isinstance(policy, Engine):
        policy = policy.policy
    if not isinstance(policy, Policy):
        raise InvalidInputError(
            f"policy must be a Policy or an Engine, got {type(policy).__name__}"
        )
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    adaptive = _check_options(c, quantile, c_max, alpha)
    if max_accepted is not None and (
        not isinstance(max_accepted, int) or isinstance(max_accepted, bool) or max_accepted < 1
    ):
        raise InvalidInputError(f"max_accepted = {max_accepted!r}: expected an integer >= 1")
    check_arms(policy, data)
    n = data.n_rounds
    width = 1
    for lo in range(0, n, CHUNK):  # everything checked before the policy learns anything
        width = max(width, int(np.diff(_checked(policy, data, lo)[1]).max(initial=1)))
    requests = None if engine is None else request_inputs(engine, data)
    rewards = np.asarray(data.rewards, dtype=np.float64)
    span = reward_range_of(data, reward_range)
    if uniforms is not None:
        uniforms = np.ascontiguousarray(uniforms, dtype=np.float64)
        if uniforms.shape != (n,):
            raise InvalidInputError(f"uniforms has shape {uniforms.shape}, expected ({n},)")
    low, width01 = span[0], span[1] - span[0]
    q_of = None
    if reward_model is not None:
        model = make_reward_model(reward_model, rewards, span)
        q_of = PastOnlyValues(data, model, low + 0.5 * width01)
    walk = kns.walk_state(c_max if adaptive else float(c))
    hist = np.zeros(kns.N_BINS)
    # without the logged candidate distributions every candidate weighs the largest
    # weight of the whole walk: the bounds wait for it (three values per event)
    n_parts = 0 if data.cand_prob is not None else 3
    *floats, accepted_all = spilled(n, [np.float64] * (3 + n_parts) + [np.bool_])
    trace = (floats[0], floats[1], accepted_all, floats[2])
    parts = tuple(floats[3:]) if n_parts else None
    bounds = [np.inf, -np.inf]
    walked = 0
    with policy.bank_in_use(width):
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            sub, ptr, pos, contexts = _shaped(policy, data, lo)
            u = rng.random(hi - lo) if uniforms is None else uniforms[lo:hi]
            left = None if max_accepted is None else max_accepted - int(walk[kns.STATE_ACCEPTED])
            contracted = None
            if engine is not None and requests is not None:
                contracted = (engine, requests[0][lo:hi], requests[1][lo:hi])
            pscores = np.ascontiguousarray(sub.pscores, dtype=np.float64)
            target, c_arr, accepted, m = _walk(
                policy, sub, pos, pscores, u, contexts, (adaptive, quantile, c_max, c), left,
                contracted, hist, walk,
            )  # fmt: skip
            nnz = int(ptr[m])
            q = np.zeros(nnz) if q_of is None else q_of.rounds(lo, lo + m)
            if q_of is not None:
                q -= low  # in place: one value per candidate of the chunk
                q /= width01
            rows = slice(lo, lo + m)
            w = target[:nnz][pos[:m]] / pscores[:m]
            r01 = (rewards[rows] - low) / width01
            terms, t_low, t_high = dr_terms(
                ptr[: m + 1], target[:nnz], q, pos[:m], r01, w,
                None if sub.cand_prob is None else sub.cand_prob[:nnz], None,
            )  # fmt: skip
            for out, value in zip(trace, (terms, c_arr[:m], accepted[:m], w), strict=True):
                out[rows] = value
            if parts is None:
                bounds = [min(bounds[0], t_low), max(bounds[1], t_high)]
            else:
                kope.supported_values(ptr[: m + 1], target[:nnz], q, *(a[rows] for a in parts))
            walked = lo + m
            if m < hi - lo:
                break
    if parts is not None:
        w_max = max((float(trace[3][rows].max(initial=0.0)) for rows in pieces(walked)),
                    default=0.0)  # fmt: skip
        for rows in pieces(walked):
            s_k, q_low, q_high = (a[rows] for a in parts)
            bounds = [min(bounds[0], float(np.min(s_k - w_max * q_high))),
                      max(bounds[1], float(np.max(s_k + w_max * (1.0 - q_low))))]  # fmt: skip
    t_all, c_all, acc_all, w_all = trace
    result = Trace(t_all[:walked], c_all[:walked], acc_all[:walked], w_all[:walked],
                   (float(bounds[0]), float(bounds[1])), span)  # fmt: skip
    return _result(result, n, alpha)


def _shaped(policy: Policy, data: LoggedData, lo: int) -> tuple[LoggedData, I64, I64, Any]:
    """:func:`_checked`'s chunk, candidates' pointer, logged positions and contexts for a
    chunk it has already checked (the walk's pass: no second validation of every
    candidate, ~10 % of a Beta replay's time)."""
    sub = data.take(lo, min(data.n_rounds, lo + CHUNK))
    ptr, idx = (as_index_array(a, "candidates") for a in sub.candidates())
    contexts = None
    if policy.n_features is not None:
        contexts = np.ascontiguousarray(sub.contexts, dtype=np.float64)
    return sub, ptr, logged_positions(sub, ptr, idx), contexts


def _checked(policy: Policy, data: LoggedData, lo: int) -> tuple[LoggedData, I64, I64, Any]:
    """Events ``lo:lo + CHUNK`` of ``data`` checked for a replay of ``policy``: the chunk,
    its candidates' pointer, logged positions (chunk-local) and contexts (or None).
    Errors count rows from ``lo``."""
    sub = data.take(lo, min(data.n_rounds, lo + CHUNK))
    try:
        ptr, _, pos, contexts = check_replay_inputs(policy, sub, checked_arms=True)
        if contexts is not None:  # the policy's bound: the walk's pass does not check again
            policy.context_rows(contexts, sub.n_rounds)
    except InvalidInputError as err:
        if lo == 0:
            raise
        raise type(err)(f"logged events from {lo} (rows counted from there): {err}") from None
    return sub, ptr, pos, contexts


def _walk(
    policy: Policy, data: LoggedData, pos: np.ndarray, pscores: F64, u: F64,
    contexts: F64 | None, rule: tuple[bool, float, float, Any], max_accepted: int | None,
    contracted: tuple[Engine, F64, np.ndarray] | None, hist: F64, state: F64,
) -> tuple[F64, F64, np.ndarray, int]:  # fmt: skip
    """Target probabilities of every candidate (nnz,), ``c`` and acceptance per event, and
    the events walked (at most ``max_accepted`` more acceptances); teaches ``policy`` on the
    accepted events as it goes, carrying the walk's ``hist`` and ``state`` (see
    :func:`allocator.kernels.nonstationary.accept_event`) from chunk to chunk. With
    ``contracted`` (the engine, request times and attribute codes) each stretch's policy
    probabilities go through the contracts event by event."""
    adaptive, quantile, c_max, _ = rule
    ptr, idx = data.candidates()
    n = data.n_rounds
    target = np.zeros(idx.shape[0])
    c_arr = np.zeros(n)
    accepted = np.zeros(n, dtype=np.bool_)
    actions = np.asarray(data.actions, dtype=np.int64)
    rewards = np.asarray(data.rewards, dtype=np.float64)
    # checked by _checked (candidates and contexts): chunks go to the checked entry
    xs_all = np.zeros((n, 0)) if contexts is None else contexts
    if contracted is None:
        events = (pscores, u, adaptive, quantile, c_max, hist, state, c_arr, accepted, target)
        walked = Walker(policy).events(ptr, idx, pos, actions, rewards, xs_all, events,
                                       max_accepted, data.outcomes)  # fmt: skip
        return target, c_arr, accepted, walked
    engine, times, codes = contracted
    no_codes = np.zeros((n, 0), dtype=np.int64)
    i, size = 0, 64
    if max_accepted is not None:  # the walk's count is cumulative over the chunks
        max_accepted += int(state[kns.STATE_ACCEPTED])
    while i < n and (max_accepted is None or state[kns.STATE_ACCEPTED] < max_accepted):
        hi = min(n, i + size)
        f0, f1 = int(ptr[i]), int(ptr[hi])
        cptr = ptr[i : hi + 1] - f0
        base = policy.decide_many(
            cptr, idx[f0:f1], xs_all[i:hi], np.zeros(hi - i), no_codes[i:hi], None, False
        ).probabilities
        probs = np.empty(f1 - f0)
        stop = 1 if policy.UPDATES_MOVE_DECISIONS else policy.config.refresh_every
        stop = stop - (0 if policy.UPDATES_MOVE_DECISIONS else policy.pending_updates)
        if max_accepted is not None:
            stop = min(stop, max_accepted - int(state[kns.STATE_ACCEPTED]))
        width = int(np.diff(cptr).max(initial=1))
        used = kns.contract_walk(
            base, cptr, idx[f0:f1], pos[i:hi] - f0, times[i:hi], codes[i:hi], pscores[i:hi],
            u[i:hi], True, adaptive, quantile, c_max, stop, hist, state, c_arr[i:hi],
            accepted[i:hi], probs, *contract_args(engine.contracts, engine, width),
        )  # fmt: skip
        target[f0 : int(ptr[i + used])] = probs[: int(ptr[i + used]) - f0]
        rows = i + np.flatnonzero(accepted[i : i + used])
        if rows.size:
            learn_rounds(policy, rows, actions, rewards, contexts, data.outcomes)
        size = max(MIN_CHUNK, 2 * used) if used < hi - i else min(8192, 2 * size)
        i += used
    return target, c_arr, accepted, i


def _result(
    trace: Trace, n_rounds: int, alpha: float, n_events: int | None = None
) -> NonstationaryResult:
    """The estimate over the first ``n_events`` walked events of ``trace`` (all: None)."""
    m = trace.terms.shape[0] if n_events is None else n_events
    summary = summarise(trace, m, alpha, n_rounds)
    low, width = trace.span[0], trace.span[1] - trace.span[0]
    if summary.estimate.low > summary.estimate.high:
        # The interval lies wholly outside the reward range: no value in the range fits the
        # terms, so the propensities cannot be the logger's probabilities. Clipping it to
        # the range would report a zero-width interval at an end of the range.
        raise EvaluationRefused(
            f"the replay's confidence sequence excludes the whole reward range {trace.span} "
            f"after {m} events: the logged propensities are not the logger's exact "
            "probabilities (e.g. far too small); fix the propensities"
        )
    value, lo, hi = (float(np.clip(low + width * v, *trace.span)) for v in summary.estimate)
    lo, hi = min(lo, value), max(hi, value)  # widened, never narrowed, to hold the value
    n_acc = summary.n_accepted
    return NonstationaryResult(
        value, lo, hi, n_acc, m, n_rounds, n_acc / m, summary.truncated / m, summary.ess, trace
    )


def at_accepted(
    result: NonstationaryResult, n_accepted: int, alpha: float = 0.05
) -> NonstationaryResult:
    """``result`` cut after its ``n_accepted``-th acceptance: the same number of replayed
    rounds as another policy's, so that their values compare like with like."""
    if not 1 <= n_accepted <= result.n_accepted:
        raise InvalidInputError(
            f"n_accepted = {n_accepted}: expected 1..{result.n_accepted} (accepted events)"
        )
    cut = nth_accepted(result.trace.accepted, n_accepted) + 1
    return _result(result.trace, result.n_rounds, alpha, cut)


def compare_nonstationary(
    policies: Mapping[str, Policy | Engine],
    data: LoggedData,
    rng: np.random.Generator,
    **options: Any,
) -> dict[str, NonstationaryResult]:
    """Replay each of ``policies`` on common uniform draws and report every one after the
    same number of accepted rounds (the smallest count reached by any of them).

    ``options`` are those of :func:`replay_nonstationary`.
    """
    if not isinstance(policies, Mapping) or not policies:
        raise InvalidInputError("policies must be a non-empty mapping of name to Policy or Engine")
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    u = rng.random(data.n_rounds)
    full = {
        name: replay_nonstationary(p, data, rng, uniforms=u, **options)
        for name, p in policies.items()
    }
    t = min(r.n_accepted for r in full.values())
    alpha = float(options.get("alpha", 0.05))
    return {name: at_accepted(r, t, alpha) for name, r in full.items()}
