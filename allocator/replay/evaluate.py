"""Off-policy evaluation of a frozen target policy on logged rounds.

:func:`target_distribution` turns a policy into the probability of every candidate of every
logged round; :func:`evaluate` builds the :class:`BanditFeedback` (target probability of the
logged action, reward model at the logged action and under the target) and runs the
estimators with bootstrap intervals and weight diagnostics. A policy that keeps learning
while it is evaluated needs replay instead (:mod:`allocator.replay.rejection`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allocator.config import EngineConfig
from allocator.engine import Engine
from allocator.errors import EvaluationRefused, InvalidInputError
from allocator.inputs import first_rows
from allocator.kernels import ope as kope
from allocator.policies.base import Policy
from allocator.replay.confidence import PastOnlyValues, dr_sequence, dr_terms
from allocator.replay.contracts import constrained_distribution, has_contracts
from allocator.replay.dataset import F64, I64, LoggedData, check_candidates
from allocator.replay.estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    BanditFeedback,
    Diagnostics,
    Estimate,
    Estimator,
    SwitchDR,
    check_feedback,
    diagnostics,
    estimate_intervals,
)
from allocator.replay.reward_model import RewardModel, check_reward_range, make_reward_model
from allocator.replay.targets import NAMED_TARGETS, dense_target, named_target, policy_for_log

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (IPS, SNIPS, DM, DR, SNDR, SwitchDR)
}
DEFAULT_ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr")
#: tolerance on a round's target probabilities summing to one
SUM_TOL = 1e-6


def check_arms(policy: Policy, data: LoggedData) -> None:
    """The policy's arm ``i`` must be the log's arm ``i`` (it may know more arms)."""
    ids = policy.registry.all_ids()[: data.n_arms]
    if tuple(ids) != tuple(data.arm_ids):
        i = next(
            (i for i, (a, b) in enumerate(zip(ids, data.arm_ids, strict=False)) if a != b),
            len(ids),
        )
        theirs = ids[i] if i < len(ids) else None
        raise InvalidInputError(
            f"arm index {i} is {data.arm_ids[i]!r} in the log but {theirs!r} in the policy's "
            "registry: build the policy over the log's arm_ids, in order"
        )


def target_distribution(policy: Policy | Any, data: LoggedData) -> F64:
    """A frozen target's probability of each candidate of each round, (nnz,) float64.

    ``policy`` is read, not taught: one ``decide_batch(draw=False)`` over the logged
    candidates and contexts gives its exact decision distribution (neither its decision
    stream nor its model changes). An engine config (or its mapping) is built over the
    log's arms first (untrained, seed 0). ``'logging'`` is the logged distribution itself,
    ``'uniform'`` the uniform one over each round's candidates. An ``(n, k)`` array is an
    action distribution per round over the log's arms; a plain ``(nnz,)`` array (e.g. a
    static split computed by the caller, aligned with ``data.candidates()``) is the
    per-candidate form. Arrays are checked and returned as float64. An :class:`Engine`
    with contracts gives its contracts' distribution on the logged timeline, queues
    advanced by its expected service (:func:`constrained_distribution`).
    """
    ptr, idx = check_candidates(data)
    if isinstance(policy, str):
        policy = named_target(policy, data)
    elif isinstance(policy, (EngineConfig, Mapping)):
        policy = policy_for_log(policy, data, 0)
    elif isinstance(policy, np.ndarray) and policy.ndim == 2:
        policy = dense_target(policy, data)
    elif isinstance(policy, Engine):
        policy = constrained_distribution(policy, data) if has_contracts(policy) else policy.policy
    if isinstance(policy, Policy):
        check_arms(policy, data)
        if policy.n_features is None:
            return policy.decide_batch(ptr, idx, draw=False).probabilities
        if data.contexts is None:
            raise InvalidInputError(
                f"{type(policy).__name__} needs contexts ({policy.n_features} features); "
                "the logged data has none"
            )
        return policy.decide_batch(ptr, idx, data.contexts, draw=False).probabilities
    try:
        prob = np.ascontiguousarray(policy, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"target must be a Policy, an engine config, {list(NAMED_TARGETS)}, an (n, k) "
            f"or (nnz,) array, got {type(policy).__name__}"
        ) from None
    if prob.shape != idx.shape:
        raise InvalidInputError(
            f"target probabilities have shape {prob.shape}, expected ({idx.shape[0]},): "
            "one per candidate of every round"
        )
    bad = ~np.isfinite(prob) | (prob < 0.0) | (prob > 1.0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(f"target probabilities must be in [0, 1]; entry {j} = {prob[j]}")
    sums = np.empty(data.n_rounds)
    kope.segment_sums(ptr, prob, sums)
    off = np.abs(sums - 1.0) > SUM_TOL
    if off.any():
        rows = np.flatnonzero(off)[:5]
        raise InvalidInputError(
            f"target probabilities of a round must sum to 1; rounds {rows.tolist()} "
            f"sum to {sums[rows].tolist()}"
        )
    return prob


def logged_positions(data: LoggedData, ptr: I64, idx: I64) -> I64:
    """Flat index into the candidates of each round's logged action (must be a candidate)."""
    pos = np.empty(data.n_rounds, dtype=np.int64)
    actions = np.ascontiguousarray(data.actions, dtype=np.int64)
    bad = kope.logged_positions(ptr, idx, actions, pos)
    if bad >= 0:
        raise InvalidInputError(
            f"round {bad}: logged action {int(actions[bad])} is not among its candidates "
            f"{idx[ptr[bad] : ptr[bad + 1]].tolist()}"
        )
    return pos


def bandit_feedback(
    data: LoggedData, target_prob: F64, q_candidates: F64 | None = None
) -> BanditFeedback:
    """The estimators' named arrays for target ``target_prob`` (nnz,), optionally with q̂.

    ``q_candidates`` (nnz,) is the reward model at every candidate; then ``q_logged`` is
    its value at the logged action and ``q_target`` its mean under the target.
    """
    ptr, idx = check_candidates(data)
    pos = logged_positions(data, ptr, idx)
    q_logged = q_target = None
    if q_candidates is not None:
        q_logged, q_target = model_terms(ptr, pos, target_prob, q_candidates)
    return BanditFeedback(
        np.asarray(data.rewards, dtype=np.float64),
        np.asarray(data.pscores, dtype=np.float64),
        target_prob[pos],
        q_logged,
        q_target,
    )


def model_terms(ptr: I64, pos: I64, target_prob: F64, q_candidates: F64) -> tuple[F64, F64]:
    """q̂ at each round's logged action and its mean under the target, both (n,): what
    the estimators read of a per-candidate model."""
    q_target = np.empty(ptr.shape[0] - 1)
    kope.segment_dots(
        ptr, np.ascontiguousarray(target_prob), np.ascontiguousarray(q_candidates), q_target
    )
    return q_candidates[pos], q_target


#: candidates whose per-candidate values are held at once (8 MiB per float64 array; a log
#: of 10^6 rounds of 80 arms has 8·10^7 candidates, 640 MB per array)
CANDIDATE_CHUNK = 1 << 20


def round_chunks(ptr: I64) -> list[tuple[int, int, int, int]]:
    """``(lo, hi, a, b)``: consecutive runs of rounds ``lo:hi`` holding about
    :data:`CANDIDATE_CHUNK` candidates ``a:b`` each (at least one round)."""
    n = ptr.shape[0] - 1
    out = []
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(ptr, ptr[lo] + CANDIDATE_CHUNK, side="right")) - 1
        hi = min(n, max(hi, lo + 1))
        out.append((lo, hi, int(ptr[lo]), int(ptr[hi])))
        lo = hi
    return out


CS_LABEL = "confidence sequence (valid on adaptive logs)"
BOOTSTRAP_LABEL = "bootstrap (i.i.d. logs only)"
WIDENED_LABEL = "bootstrap widened to contain the {} confidence sequence (valid on adaptive logs)"
#: cross-fitting splits whose spread the bootstrap intervals carry
N_SPLITS = 5


@dataclass(frozen=True)
class Evaluation:
    """Per estimator name, the estimate with its interval; the importance-weight diagnostics.

    ``diagnostics`` describe the weights under the evaluation's ``clip``. Estimators that
    could not run (no reward model) are listed in ``skipped`` with the reason; indexing one
    of them raises that reason. ``methods`` names how each interval was computed and
    ``reward_range`` is the range values and intervals were kept in.
    """

    estimates: dict[str, Estimate]
    diagnostics: Diagnostics
    skipped: dict[str, str]
    n_rounds: int
    methods: dict[str, str] = field(default_factory=dict)
    reward_range: tuple[float, float] = (0.0, 1.0)

    def __getitem__(self, name: str) -> Estimate:
        if name in self.skipped:
            raise InvalidInputError(self.skipped[name])
        try:
            return self.estimates[name]
        except KeyError:
            raise InvalidInputError(
                f"no estimate {name!r}; evaluated: {sorted(self.estimates)}"
            ) from None


def _estimators(spec: Sequence[str | Estimator], clip: float | None) -> list[Estimator]:
    if isinstance(spec, str) or not spec:
        raise InvalidInputError(f"estimators must be a non-empty sequence, got {spec!r}")
    out: list[Estimator] = []
    for item in spec:
        if isinstance(item, Estimator):
            out.append(item)
        elif isinstance(item, str) and item in ESTIMATORS:
            out.append(ESTIMATORS[item](clip=clip))
        else:
            raise InvalidInputError(
                f"unknown estimator {item!r}; known: {sorted(ESTIMATORS)} or Estimator instances"
            )
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"estimators repeat a name: {names}")
    return out


def reward_range_of(data: LoggedData, declared: Any) -> tuple[float, float]:
    """The declared range (every reward checked against it), else [0, 1] when the rewards
    lie in it, else the observed [min, max] (declare the range for unbounded rewards)."""
    r = np.asarray(data.rewards, dtype=np.float64)
    if r.size == 0 or not (np.isfinite(r.min()) and np.isfinite(r.max())):
        raise InvalidInputError("rewards must be a non-empty array of finite numbers")
    rng = check_reward_range(declared)
    low, high = float(r.min()), float(r.max())
    if rng is None:
        return (0.0, 1.0) if low >= 0.0 and high <= 1.0 else (low, max(high, low + 1e-12))
    if low >= rng[0] and high <= rng[1]:  # no per-row mask unless a reward is outside
        return rng
    bad = (r < rng[0]) | (r > rng[1])
    if bad.any():
        rows = first_rows(bad)
        raise InvalidInputError(
            f"rewards must be in reward_range [{rng[0]}, {rng[1]}]; first bad rows {rows}: "
            f"{r[rows].tolist()}"
        )
    return rng


def _model_values(
    spec: RewardModel | str, data: LoggedData, span: tuple[float, float],
    rng: np.random.Generator, target_prob: F64, ptr: I64, pos: I64,
) -> tuple[list[tuple[F64, F64]], RewardModel]:  # fmt: skip
    """:func:`model_terms` for each cross-fitting split, and the model family used.

    A fitted model serves as is (one split); an unfitted one or a name (cross-fitted with
    2 folds) is fitted on :data:`N_SPLITS` random fold splits, so that the bootstrap sees
    how much the estimate moves with the split. Per-candidate values exist only a chunk
    of rounds at a time (:data:`CANDIDATE_CHUNK`): at 80 arms they are 640 bytes a round, the
    per-round ones 16.
    """
    rewards = np.asarray(data.rewards, dtype=np.float64)
    model = make_reward_model(spec, rewards, span, n_folds=2)
    if model.is_fitted:
        fits = [model]
    elif model.n_folds == 1:
        fits = [model.unfitted().fit(data)]
    else:
        fits = [model.unfitted().fit(data, s) for s in rng.spawn(N_SPLITS)]
    out = []
    for fit in fits:
        q_logged, q_target = np.empty(data.n_rounds), np.empty(data.n_rounds)
        for lo, hi, a, b in round_chunks(ptr):
            q_logged[lo:hi], q_target[lo:hi] = model_terms(
                ptr[lo : hi + 1] - a, pos[lo:hi] - a, target_prob[a:b],
                fit.predict_candidates(data, lo, hi),
            )  # fmt: skip
        out.append((q_logged, q_target))
    return out, model


def _dr_terms(
    name: str, data: LoggedData, prob: F64, ptr: I64, pos: I64, model: RewardModel | None,
    clip: float | None, low: float, width: float, r01: F64,
) -> tuple[F64, float, float]:  # fmt: skip
    """Past-only DR terms of every round and their bounds, scaled. IPS is DR with a zero
    model: a reward of 0, ``-low / width`` scaled, so that its value is ``mean(w·r)`` for
    any reward range, as the bootstrap's IPS."""
    pscores = np.asarray(data.pscores, dtype=np.float64)
    weights = prob[pos] / pscores
    if clip is not None:
        weights = np.minimum(weights, clip)
    past = None
    if name != "ips":
        assert model is not None
        past = PastOnlyValues(data, model, low + 0.5 * width)
    w_max = float(weights.max(initial=0.0))
    terms = np.empty(data.n_rounds)
    t_low, t_high = np.inf, -np.inf
    for lo, hi, a, b in round_chunks(ptr):
        q = np.zeros(b - a) if past is None else past.rounds(lo, hi)
        q -= low  # in place: one value per candidate of the chunk
        q /= width
        terms[lo:hi], c_low, c_high = dr_terms(
            ptr[lo : hi + 1] - a, prob[a:b], q, pos[lo:hi] - a, r01[lo:hi], weights[lo:hi],
            None if data.cand_prob is None else data.cand_prob[a:b], clip, w_max,
        )  # fmt: skip
        t_low, t_high = min(t_low, c_low), max(t_high, c_high)
    return terms, t_low, t_high


def _anytime(
    name: str, data: LoggedData, on: tuple[F64, I64, I64] | None, model: RewardModel | None,
    clip: float | None, span: tuple[float, float], alpha: float,
) -> Estimate:  # fmt: skip
    """IPS or DR with its confidence sequence (scaled to [0, 1] and back) of the target
    ``on`` = (probability of every candidate, candidate pointer, logged positions); None is
    the logging policy on its own log (IPS only: every weight is one)."""
    low, width = span[0], span[1] - span[0]
    r01 = (np.asarray(data.rewards, dtype=np.float64) - low) / width
    if on is None:  # every weight is one (capped by clip): IPS's terms, zero model
        w, q = 1.0 if clip is None else min(1.0, clip), -low / width
        terms, t_low, t_high = q + w * (r01 - q), q * (1.0 - w), q * (1.0 - w) + w
    else:
        terms, t_low, t_high = _dr_terms(name, data, *on, model, clip, low, width, r01)
    est = dr_sequence(terms, t_low, t_high, alpha)
    if est.low > est.high:
        # The running intersection is empty: no single value is the terms' conditional
        # mean, i.e. the sequence's premise (exact logging probabilities with support for
        # every action the target takes, no clipping bias) fails on this log.
        raise EvaluationRefused(
            f"{name}: the confidence sequence is empty on this log (lower "
            f"{low + width * est.low:.6g} > upper {low + width * est.high:.6g}): the logged "
            "propensities are not the logger's exact probabilities of the actions the target "
            "takes (or clip biases the terms); fix the propensities, or use "
            "interval='bootstrap' on i.i.d. logs"
        )
    # The sequence bounds the running conditional mean, not the final average of the
    # terms: widen (never narrow) so the interval holds the value it is reported with.
    value = est.value
    est = type(est)(value, min(est.low, value), max(est.high, value))
    return Estimate(*(low + width * v for v in est))


def _in_range(e: Estimate, span: tuple[float, float]) -> Estimate:
    """The value lies in the reward range, so projecting onto it never moves away from it."""
    return Estimate(*(float(np.clip(v, *span)) for v in e))


def evaluate(
    data: LoggedData,
    target_prob: Policy | F64,
    *,
    estimators: Sequence[str | Estimator] = DEFAULT_ESTIMATORS,
    reward_model: RewardModel | str | None = None,
    clip: float | None = None,
    interval: str = "cs",
    reward_range: Any = None,
    n_boot: int = 200,
    alpha: float = 0.05,
    rng: np.random.Generator,
) -> Evaluation:
    """Estimate the value of a frozen target policy on ``data``.

    ``target_prob`` is a policy, an engine config, ``'logging'``, ``'uniform'``, an (n, k)
    or (nnz,) distribution (see :func:`target_distribution`). ``'logging'`` on a log that
    has only the chosen arm's propensity (a foreign log) is the logger on its own log:
    every weight is one, IPS and SNIPS are the mean reward with their interval, and the
    model-based estimators are skipped (the logger's other candidates are unknown).
    ``estimators`` are names from :data:`ESTIMATORS` (built with ``clip``) or instances.
    ``reward_model`` serves DM / DR / SNDR / Switch-DR: a name (``auto``, ``ridge``,
    ``logistic``; cross-fitted over :data:`N_SPLITS` random splits) or a
    :class:`RewardModel` (fitted: used as is); with None those estimators are skipped (the
    reason is in :attr:`Evaluation.skipped`) and if nothing is left to run this raises.

    ``interval="cs"`` (default) gives IPS and DR anytime-valid confidence sequences, valid on
    logs written by a learning policy (DR then uses a reward model fitted on earlier rounds
    only); the other estimators' Poisson-bootstrap interval is widened to contain the
    sequence of their unbiased counterpart (SNIPS: IPS; DM, SNDR, Switch-DR: DR), since a
    bootstrap misses a reward model's bias even on i.i.d. logs. With
    ``interval="bootstrap"`` all get the plain bootstrap, valid for i.i.d. logs only.
    Values and intervals are kept inside ``reward_range`` (declared, else [0, 1] or the
    observed range).
    """
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    if interval not in ("cs", "bootstrap"):
        raise InvalidInputError(f"interval = {interval!r}: expected 'cs' or 'bootstrap'")
    ests = _estimators(estimators, clip)
    on: tuple[F64, I64, I64] | None = None  # the target's probabilities, ptr, positions
    if isinstance(target_prob, str) and target_prob == "logging" and data.cand_prob is None:
        # The logger on its own log: each logged action's target probability is its
        # propensity, and nothing is known of the logger's other candidates.
        pscores = np.asarray(data.pscores, dtype=np.float64)
        plain = BanditFeedback(np.asarray(data.rewards, dtype=np.float64), pscores, pscores)
    else:
        prob = target_distribution(target_prob, data)
        ptr, idx = check_candidates(data)
        on = (prob, ptr, logged_positions(data, ptr, idx))
        plain = bandit_feedback(data, prob)
    # Every row checked (rewards, propensities) before any weight is formed from it.
    check_feedback(plain, False)
    span = reward_range_of(data, reward_range)
    skipped: dict[str, str] = {}
    splits: list[tuple[F64, F64] | tuple[None, None]] = [(None, None)]
    model = None
    unscored = None  # why the model-based estimators cannot run, if they cannot
    if on is None:
        unscored = (
            "{} needs the logging policy's probability of every candidate, and this log has "
            "only the chosen arm's: the logger's value is its mean reward (ips, snips)"
        )
    elif reward_model is None:
        unscored = (
            "{} needs a reward model: pass reward_model='auto' (or 'ridge', 'logistic', a "
            "RewardModel) to evaluate()"
        )
    if unscored is not None:
        skipped = {e.name: unscored.format(e.name) for e in ests if e.needs_model}
        if len(skipped) == len(ests):
            raise InvalidInputError("; ".join(skipped.values()))
    elif any(e.needs_model for e in ests):
        assert on is not None and reward_model is not None
        values, model = _model_values(reward_model, data, span, rng, *on)
        splits = list(values)
    feedback = [plain._replace(q_logged=ql, q_target=qt) for ql, qt in splits]
    run = [e for e in ests if e.name not in skipped]
    estimates = estimate_intervals(run, feedback, rng, n_boot, alpha)
    methods = {e.name: BOOTSTRAP_LABEL for e in run}
    if interval == "cs":
        sequences: dict[tuple[str, float | None], Estimate] = {}
        for e in run:
            # IPS and DR get their own sequence; the others' bootstrap interval is widened
            # to contain their unbiased counterpart's (SNIPS: IPS; the model-based: DR), so
            # that it covers whenever that one does: a bootstrap interval misses a reward
            # model's bias even on i.i.d. logs, and a learning logger's dependence on them.
            anchor = e.name if type(e) in (IPS, DR) else ("dr" if e.needs_model else "ips")
            key = (anchor, e.clip)
            if key not in sequences:
                sequences[key] = _anytime(anchor, data, on, model, e.clip, span, alpha)
            cs = sequences[key]
            if anchor == e.name:
                estimates[e.name] = cs
                methods[e.name] = CS_LABEL
            else:
                own = estimates[e.name]
                estimates[e.name] = Estimate(
                    own.value, min(own.low, cs.low), max(own.high, cs.high)
                )
                methods[e.name] = WIDENED_LABEL.format(anchor.upper())
    estimates = {k: _in_range(v, span) for k, v in estimates.items()}
    return Evaluation(
        estimates, diagnostics(feedback[0], clip), skipped, data.n_rounds, methods, span
    )
