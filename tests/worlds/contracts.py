"""A small driver for constraint tests: partners + Mini Shop merchants, logged decisions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocator import ArmRegistry, BetaBernoulliConfig, Engine, make_policy
from allocator.config import BetaPrior
from allocator.constraints import ConstraintSet

T0 = 1_759_276_800.0  # 2025-10-01T00:00:00Z
CATEGORIES = ("food", "toys", "apparel")


@dataclass
class Log:
    arms: np.ndarray
    groups: np.ndarray
    times: np.ndarray
    categories: np.ndarray
    propensities: np.ndarray
    forced: np.ndarray
    candidate_groups: list[set[str]]
    candidates: list[np.ndarray]
    probabilities: list[np.ndarray]


def world(n_partners: int, n_merchants: int = 5, adversarial: bool = True, seed: int = 0):
    """Registry + policy. Adversarial: greedy, no ε, sure that partners are worthless."""
    reg = ArmRegistry()
    partners = [f"partner{i}" for i in range(n_partners)]
    for name in partners:
        reg.add([name], name)
    reg.add([f"merchant:{i}" for i in range(n_merchants)], "mini_shop")
    if adversarial:
        bad = {p: BetaPrior(alpha=1, beta=1000) for p in partners}
        cfg = BetaBernoulliConfig(
            rule="greedy", epsilon=0.0,
            group_priors={**bad, "mini_shop": BetaPrior(alpha=1000, beta=1)},
        )  # fmt: skip
    else:
        cfg = BetaBernoulliConfig(epsilon=0.05)
    return reg, make_policy(cfg, reg, seed=seed), partners


def run(
    engine: Engine,
    reg: ArmRegistry,
    partners: list[str],
    n: int,
    rng: np.random.Generator,
    eligibility: np.ndarray,
    seconds: float,
    ctr: np.ndarray | None = None,
    keep_probabilities: bool = False,
    batch: int = 64,
) -> Log:
    """n impressions spread over ``seconds``; partner i is a candidate w.p. eligibility[i].

    Requests go through the engine's batch entry ``batch`` at a time; with ``ctr`` the
    outcomes of a batch are learned before the next one (delayed feedback).
    """
    merchants = reg.members("mini_shop")
    partner_idx = reg.lookup(partners)
    times = T0 + np.arange(n) * (seconds / n)
    cats = rng.integers(0, len(CATEGORIES), n)
    present = rng.random((n, len(partners))) < eligibility
    picks = np.argsort(rng.random((n, merchants.size)), axis=1)[:, :3]
    cands = [np.concatenate([partner_idx[present[i]], merchants[picks[i]]]) for i in range(n)]
    arms = np.empty(n, dtype=np.int64)
    props = np.empty(n)
    forced = np.zeros(n, dtype=bool)
    probs = []
    names = np.array(CATEGORIES)[cats]
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        ptr = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum([c.size for c in cands[lo:hi]], out=ptr[1:])
        out = engine.decide_batch(
            ptr, np.concatenate(cands[lo:hi]), None, times[lo:hi], {"category": names[lo:hi]}
        )
        arms[lo:hi], props[lo:hi], forced[lo:hi] = out.arms, out.propensities, out.forced >= 0
        if keep_probabilities:
            probs.extend(np.split(out.probabilities, ptr[1:-1]))
        if ctr is not None:
            engine.update_batch(out.arms, (rng.random(hi - lo) < ctr[out.arms]).astype(float))
    cand_groups = [{reg.group_of(int(a)) for a in c} for c in cands]
    groups = np.array([reg.group_of(int(a)) for a in arms])
    return Log(arms, groups, times, cats, props, forced, cand_groups, cands, probs)


def constrained(policy, spec: dict) -> Engine:
    return Engine(policy, ConstraintSet.model_validate(spec))


def window_slacks(log: Log, constraint, window: int) -> np.ndarray:
    """(served - target) per complete sliding window of in-scope impressions (floor sign)."""
    group = constraint.target.group
    scope = constraint.scope.get("category")
    cats = np.array(CATEGORIES)[log.categories]
    s = constraint.schedule
    in_time = (log.times >= s.start.timestamp()) & (log.times < s.end.timestamp())
    in_scope = in_time & (np.isin(cats, scope) if scope else True)
    if constraint.kind == "floor":
        eligible = np.array([group in g for g in log.candidate_groups])
    else:
        eligible = np.array([bool(g - {group}) for g in log.candidate_groups])
    counted = in_scope & eligible
    served = (log.groups[counted] == group).astype(float)
    target = np.array([s.value_at(t) for t in log.times[counted]])
    if served.size < window:
        return np.array([])
    cs = np.concatenate([[0.0], np.cumsum(served - target)])
    gaps = cs[window:] - cs[:-window]
    return gaps if constraint.kind == "floor" else -gaps
