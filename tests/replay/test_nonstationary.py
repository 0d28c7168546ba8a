"""Nonstationary replay (Dudík et al. 2012): the acceptance kernel against a naive
reference, the uniform special case against rejection replay, learning policies replayed
on logs of another learning policy against their on-policy value, equal-count comparison,
and refusals that leave the policy untouched."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import ArmRegistry
from allocator.errors import AllocatorError, InvalidInputError
from allocator.kernels import nonstationary as kns
from allocator.policies import make_policy
from allocator.replay import LoggedData, replay_learning_policy
from allocator.replay.nonstationary import (
    at_accepted,
    compare_nonstationary,
    replay_nonstationary,
)
from tests import naive
from tests.worlds.logged import (
    bernoulli_log,
    bernoulli_registry,
    learning_log,
    make_world,
    online_value,
)

MEANS = np.array([0.1, 0.2, 0.3, 0.5, 0.35])


def _beta(seed: int = 0):
    return make_policy({"kind": "beta_bernoulli"}, bernoulli_registry(5), seed)


def _linear_ts(world, seed: int, **extra):
    reg = ArmRegistry(capacity=16)
    reg.add(list(world.arm_ids), "g")
    cfg = {"kind": "linear_gaussian", "n_features": world.theta.shape[1], **extra}
    return make_policy(cfg, reg, seed)


@pytest.mark.parametrize("adaptive", [True, False])
def test_accept_event_matches_the_naive_reference(adaptive):
    rng = np.random.default_rng(4)
    m = 400
    d = rng.dirichlet(np.ones(4), m)[:, 0] * (rng.random(m) < 0.95)  # some d = 0
    p = rng.uniform(0.05, 1.0, m)
    u = rng.random(m)
    hist, state = np.zeros(kns.N_BINS), kns.walk_state(0.7)
    c_out, acc = np.zeros(m), np.zeros(m, dtype=np.bool_)
    for k in range(m):
        acc[k] = kns.accept_event(d[k], p[k], u[k], adaptive, 0.1, 0.7, hist, state, c_out, k)
    want_c, want_acc = naive.accept_walk(d, p, u, adaptive, 0.1, 0.7, 0.7,
                                         kns.BINS_PER_OCTAVE, kns.LOG2_LOW)  # fmt: skip
    assert state[kns.STATE_ACCEPTED] == acc.sum() == want_acc.sum()
    np.testing.assert_array_equal(acc, want_acc)
    np.testing.assert_allclose(c_out, want_c, rtol=1e-12)
    assert acc.sum() > 20  # the test walks through many acceptances (and resets of c)


def test_uniform_log_agrees_with_rejection_replay():
    """The special case: on a uniform log with c = 1/K both accept ~n/K rounds and agree."""
    data = bernoulli_log(MEANS, 20_000, np.random.default_rng(0), with_cand_prob=True)
    ns = replay_nonstationary(_beta(), data, np.random.default_rng(1), c=0.2)
    rj = replay_learning_policy(_beta(), data, np.random.default_rng(1))
    print(f"nonstationary {ns.value:.4f} [{ns.low:.4f}, {ns.high:.4f}] accepted "
          f"{ns.n_accepted}; rejection {rj.value:.4f} [{rj.low:.4f}, {rj.high:.4f}] accepted "
          f"{rj.n_accepted}")  # fmt: skip
    assert abs(ns.acceptance_rate - 0.2) < 0.015 and abs(rj.n_accepted / 20_000 - 0.2) < 0.015
    assert ns.truncated_share == 0.0
    assert ns.low <= rj.value <= ns.high and rj.low <= ns.value <= rj.high


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.heavy
def test_beta_ts_on_a_skewed_log_covers_its_online_value(seed):
    favour = np.array([0.7, 0.1, 0.1, 0.05, 0.05])
    data = bernoulli_log(MEANS, 20_000, np.random.default_rng(10 + seed), epsilon=0.3,
                         favour=favour, with_cand_prob=True)  # fmt: skip
    res = replay_nonstationary(_beta(seed), data, np.random.default_rng(seed))
    steps = res.n_accepted
    truth = np.mean([
        online_value_bernoulli(_beta(100 + j), steps, np.random.default_rng(100 + j))
        for j in range(4)
    ])  # fmt: skip
    print(
        f"seed {seed}: {res.value:.4f} [{res.low:.4f}, {res.high:.4f}] truth {truth:.4f}, "
        f"acceptance {res.acceptance_rate:.3f}, truncated {res.truncated_share:.4f}"
    )
    assert res.low <= truth <= res.high
    assert res.high - res.low < 0.2
    assert 0.05 < res.acceptance_rate < 1.0  # adaptive c accepts far more than c = min p


def online_value_bernoulli(policy, steps: int, rng: np.random.Generator) -> float:
    cand = np.arange(MEANS.shape[0], dtype=np.int64)
    total = 0.0
    for _ in range(steps):
        arm = policy.decide(cand).arm_index
        total += float(policy.probabilities @ MEANS)
        policy.update(arm, float(rng.random() < MEANS[arm]))
    return total / steps


@pytest.mark.heavy
@pytest.mark.parametrize("seed", [0, 1])
def test_contextual_ts_on_another_learning_policys_log_covers_its_online_value(seed):
    """Linear TS (learning) replayed on a log written by an ε-greedy linear policy that
    learned as it logged, vs linear TS played online in the same world."""
    world = make_world(20 + seed, n_arms=4, n_features=3)
    logger = _linear_ts(world, 50 + seed, rule="greedy", epsilon=0.2)
    data = learning_log(world, logger, 12_000, np.random.default_rng(seed))
    res = replay_nonstationary(_linear_ts(world, seed), data, np.random.default_rng(seed))
    truth = np.mean([
        online_value(_linear_ts(world, 200 + j), world, res.n_accepted,
                     np.random.default_rng(200 + j))
        for j in range(3)
    ])  # fmt: skip
    print(
        f"seed {seed}: {res.value:.4f} [{res.low:.4f}, {res.high:.4f}] truth {truth:.4f}, "
        f"accepted {res.n_accepted} of {res.n_events} (rate {res.acceptance_rate:.3f}, "
        f"truncated {res.truncated_share:.4f}, ess {res.ess:.0f})"
    )
    assert res.low <= truth <= res.high
    assert res.high - res.low < 0.25


def test_comparison_reports_every_policy_after_the_same_accepted_count():
    favour = np.array([0.05, 0.05, 0.1, 0.1, 0.7])
    data = bernoulli_log(MEANS, 8000, np.random.default_rng(3), epsilon=0.5, favour=favour)
    greedy = make_policy({"kind": "beta_bernoulli", "rule": "greedy", "epsilon": 0.3},
                         bernoulli_registry(5), 1)  # fmt: skip
    out = compare_nonstationary({"ts": _beta(1), "greedy": greedy}, data,
                                np.random.default_rng(2))  # fmt: skip
    counts = {name: r.n_accepted for name, r in out.items()}
    assert len(set(counts.values())) == 1, counts
    for r in out.values():
        assert r.trace.accepted[: r.n_events].sum() == r.n_accepted
        assert r.low <= r.value <= r.high


def test_cutting_at_fewer_acceptances_walks_fewer_events():
    data = bernoulli_log(MEANS, 5000, np.random.default_rng(7), with_cand_prob=True)
    full = replay_nonstationary(_beta(), data, np.random.default_rng(7))
    half = at_accepted(full, full.n_accepted // 2)
    assert half.n_accepted == full.n_accepted // 2 and half.n_events < full.n_events
    with pytest.raises(InvalidInputError, match="n_accepted"):
        at_accepted(full, full.n_accepted + 1)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"c": 0.0}, "c = 0.0"),
        ({"c": "fixed"}, "c = 'fixed'"),
        ({"c": True}, "c = True"),
        ({"quantile": 1.0}, "quantile"),
        ({"c_max": 2.0}, "c_max"),
        ({"alpha": 0.0}, "alpha"),
        ({"max_accepted": 0}, "max_accepted"),
        ({"uniforms": np.zeros(3)}, "uniforms has shape"),
        ({"reward_model": "forest"}, "reward_model"),
    ],
)
def test_bad_options_are_refused_before_the_policy_learns(options, match):
    data = bernoulli_log(MEANS, 300, np.random.default_rng(0))
    policy = _beta()
    before = {k: v.copy() for k, v in policy.export_state()[0].items()}
    with pytest.raises(InvalidInputError, match=match):
        replay_nonstationary(policy, data, np.random.default_rng(0), **options)
    after = policy.export_state()[0]
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_rewards_outside_the_policys_domain_are_refused_before_it_learns():
    data = bernoulli_log(MEANS, 300, np.random.default_rng(0))
    bad = data.rewards.copy()
    bad[7] = 2.0
    import dataclasses

    with pytest.raises(InvalidInputError):
        replay_nonstationary(_beta(), dataclasses.replace(data, rewards=bad),
                             np.random.default_rng(0))  # fmt: skip


@pytest.mark.parametrize(
    ("pscore", "error"),
    [
        (1e-12, "confidence sequence excludes the whole reward range"),  # not [0, 0]
        (5e-324, r"pscores must be in \(0, 1\]; first bad rows \[0, 1, 2, 3, 4\]"),
    ],
)
def test_propensities_that_cannot_be_the_loggers_are_refused(pscore, error):
    rng = np.random.default_rng(0)
    n = 200
    data = LoggedData(
        arm_ids=tuple(f"a{i}" for i in range(4)), actions=rng.integers(0, 4, n),
        rewards=(rng.random(n) < 0.1).astype(float), pscores=np.full(n, pscore),
    )  # fmt: skip
    reg = ArmRegistry()
    reg.add(list(data.arm_ids), "g")
    policy = make_policy({"kind": "beta_bernoulli"}, reg, 1)
    with pytest.raises(AllocatorError, match=error):
        replay_nonstationary(policy, data, np.random.default_rng(0))


def test_one_shared_candidate_list_is_decided_once_per_chunk_with_the_same_result():
    """A context-free policy on rounds that all share one candidate list gets its chunk's
    distribution from one row; reversing the list of the last round forces the per-row path,
    and every event's target probability and acceptance stay the same."""
    data = bernoulli_log(
        MEANS,
        6000,
        np.random.default_rng(5),
        epsilon=0.4,
        favour=np.array([0.5, 0.2, 0.1, 0.1, 0.1]),
        with_cand_prob=True,
    )
    ptr, idx = data.candidates()
    shared = replay_nonstationary(_beta(3), data, np.random.default_rng(6))
    idx2, prob2 = idx.copy(), data.cand_prob.copy()
    idx2[ptr[-2] :], prob2[ptr[-2] :] = idx[ptr[-2] :][::-1], data.cand_prob[ptr[-2] :][::-1]
    import dataclasses

    per_row = replay_nonstationary(
        _beta(3),
        dataclasses.replace(data, cand_ptr=ptr, cand_idx=idx2, cand_prob=prob2),
        np.random.default_rng(6),
    )
    assert shared.n_accepted == per_row.n_accepted and shared.n_accepted > 500
    np.testing.assert_array_equal(shared.trace.accepted, per_row.trace.accepted)
    np.testing.assert_allclose(shared.trace.weights, per_row.trace.weights, rtol=1e-12)
    assert shared.value == pytest.approx(per_row.value, rel=1e-9)


def test_a_context_beyond_the_policys_bound_is_refused_before_it_learns(monkeypatch):
    """Contexts are checked against the policy's ``max_abs_input`` in the checking pass, so
    a bad context in a later chunk is refused (its row counted from the log's start) with
    the policy as it was, not after the chunks before it were learned."""
    import dataclasses

    from allocator.replay import nonstationary as ns
    from tests.replay.test_rejection_walk import full_log
    from tests.replay.test_rejection_walk import policy as make

    monkeypatch.setattr(ns, "CHUNK", 100)
    data = full_log(400, True)
    x = data.contexts.copy()
    x[250, 1] = 2e6  # max_abs_input is 1e6
    pol = make("linear")
    before = {k: v.copy() for k, v in pol.export_state()[0].items()}
    with pytest.raises(InvalidInputError, match=r"events from 200.*contexts\[50, 1\] = 2000000"):
        replay_nonstationary(pol, dataclasses.replace(data, contexts=x), np.random.default_rng(0))
    after = pol.export_state()[0]
    assert all(np.array_equal(before[k], after[k]) for k in before)
