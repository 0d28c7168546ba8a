"""Rejection replay: agrees with the on-policy value on uniform logs, refuses biased ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from allocator import (
    BetaBernoulliConfig,
    EvaluationRefused,
    InvalidInputError,
    LinearGaussianConfig,
    make_policy,
)
from allocator.replay import LoggedData, replay_learning_policy
from tests.worlds.logged import (
    bernoulli_log,
    bernoulli_registry,
    log_rounds,
    make_world,
    on_policy_value,
)

MEANS = np.array([0.2, 0.35, 0.5, 0.65])
CONFIG = BetaBernoulliConfig(bank_rows=64)  # a small bank keeps the JIT-off run short


def beta_ts(seed: int):
    return make_policy(CONFIG, bernoulli_registry(4), seed=seed)


def replay_vs_online(logs: list[LoggedData], eps: float | None) -> tuple[float, float, float]:
    """Mean replayed value, mean on-policy value over as many steps, and the gap's std error."""
    gaps, values = [], []
    for s, data in enumerate(logs):
        res = replay_learning_policy(beta_ts(s), data, np.random.default_rng(50 + s), eps)
        online = on_policy_value(beta_ts(1000 + s), MEANS, res.n_accepted, np.random.default_rng(s))
        gaps.append(res.value - online)
        values.append(res.value)
    g = np.asarray(gaps)
    return float(np.mean(values)), float(g.mean()), float(g.std(ddof=1) / np.sqrt(g.size))


@pytest.mark.heavy
def test_replay_of_beta_ts_on_uniform_logs_matches_its_online_value():
    logs = [bernoulli_log(MEANS, 8000, np.random.default_rng(s)) for s in range(8)]
    value, gap, se = replay_vs_online(logs, None)
    print(f"replay {value:.4f}, gap to on-policy {gap:+.4f} (se {se:.4f})")
    assert value > 0.6  # it learned: uniform play earns 0.425, the best arm 0.65
    # One seed's gap (two means of ~2000 rewards, two learning paths) has sd ≈ 0.015; over
    # 150 seeds the mean gap was −0.0009 ± 0.0014. The mean of 8 seeds has se ≈ 0.005, and
    # 0.02 is 4 se: far below the 0.225 between uniform play and the best arm.
    assert abs(gap) < 0.02


@pytest.mark.heavy
def test_epsilon_slice_of_a_mixture_log_matches_the_online_value():
    favour = np.array([0.7, 0.2, 0.1, 0.0])  # the logger prefers the worst arms
    logs = [
        bernoulli_log(MEANS, 20_000, np.random.default_rng(s), epsilon=0.4, favour=favour)
        for s in range(8)
    ]
    value, gap, se = replay_vs_online(logs, 0.4)
    print(f"ε-slice replay {value:.4f}, gap to on-policy {gap:+.4f} (se {se:.4f})")
    assert value > 0.6 and abs(gap) < 0.02  # ~2000 accepted rounds per seed, as above


def test_epsilon_slice_keeps_a_uniform_epsilon_share():
    favour = np.array([0.7, 0.2, 0.1, 0.0])
    data = bernoulli_log(MEANS, 20_000, np.random.default_rng(1), 0.3, favour, with_cand_prob=True)
    res = replay_learning_policy(beta_ts(0), data, np.random.default_rng(2), uniform_epsilon=0.3)
    assert res.n_kept / res.n_rounds == pytest.approx(0.3, abs=0.015)
    assert res.n_accepted == pytest.approx(res.n_kept / 4, rel=0.1)
    assert res.curve.shape == (res.n_accepted,) and res.curve[-1] == pytest.approx(res.value)
    assert res.low < res.value < res.high


def test_uniform_rounds_with_varying_candidates_and_contexts():
    world = make_world(0)
    data = log_rounds(world, 600, np.random.default_rng(0)).data
    sizes = np.diff(data.cand_ptr)
    uniform = dataclasses.replace(
        data, pscores=1.0 / sizes, cand_prob=np.repeat(1.0 / sizes, sizes)
    )  # contexts and rewards as logged: only the uniformity check matters here
    policy = make_policy(LinearGaussianConfig(n_features=3), bernoulli_registry(4), seed=1)
    res = replay_learning_policy(policy, uniform, np.random.default_rng(0))
    again = replay_learning_policy(
        make_policy(LinearGaussianConfig(n_features=3), bernoulli_registry(4), seed=1),
        uniform,
        np.random.default_rng(0),
    )
    assert res.value == again.value and np.array_equal(res.curve, again.curve)
    assert res.n_kept == 600 and 0 < res.n_accepted < 600
    assert policy.n_observations.sum() == res.n_accepted  # it learned from accepted rounds only


@pytest.mark.parametrize("with_cand_prob", [False, True])
def test_non_uniform_logs_are_refused_with_the_reason(with_cand_prob):
    favour = np.array([0.7, 0.2, 0.1, 0.0])
    data = bernoulli_log(MEANS, 500, np.random.default_rng(0), 0.5, favour, with_cand_prob)
    what = "logging distribution is not uniform" if with_cand_prob else "not 1/|candidates|"
    with pytest.raises(EvaluationRefused, match=what) as err:
        replay_learning_policy(beta_ts(0), data, np.random.default_rng(0))
    text = str(err.value)
    assert "first offending rows [0, 1, 2, 3, 4]" in text
    assert "is biased" in text and "IPS / DR" in text and "uniform_epsilon" in text
    with pytest.raises(EvaluationRefused, match=r"not an ε-mixture with ε = 0.6"):
        replay_learning_policy(beta_ts(0), data, np.random.default_rng(0), uniform_epsilon=0.6)


def test_a_log_too_short_to_accept_anything_is_refused_one_round_has_no_interval():
    data = bernoulli_log(MEANS, 1, np.random.default_rng(0))
    data = dataclasses.replace(data, actions=np.array([3]))
    policy = make_policy(BetaBernoulliConfig(rule="greedy", epsilon=0.0), bernoulli_registry(4), 0)
    with pytest.raises(EvaluationRefused, match="no round was accepted out of 1"):
        replay_learning_policy(policy, data, np.random.default_rng(0))
    one = replay_learning_policy(  # the greedy policy takes arm 0: one accepted round
        policy, dataclasses.replace(data, actions=np.array([0])), np.random.default_rng(0)
    )
    assert one.n_accepted == 1 and np.isnan(one.low) and np.isnan(one.high)


def _data():
    return bernoulli_log(MEANS, 50, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: replay_learning_policy("ts", _data(), np.random.default_rng(0)), "a Policy"),
        (lambda: replay_learning_policy(beta_ts(0), _data(), 0), "numpy Generator"),
        (
            lambda: replay_learning_policy(beta_ts(0), _data(), np.random.default_rng(0), 0.0),
            r"uniform_epsilon = 0.0: expected a number in \(0, 1\]",
        ),
        (
            lambda: replay_learning_policy(beta_ts(0), _data(), np.random.default_rng(0), 1.5),
            r"uniform_epsilon = 1.5",
        ),
        (
            lambda: replay_learning_policy(beta_ts(0), _data(), np.random.default_rng(0), "all"),
            r"uniform_epsilon = 'all'",
        ),
        (
            lambda: replay_learning_policy(
                beta_ts(0), _data(), np.random.default_rng(0), alpha=1.0
            ),
            r"alpha = 1.0",
        ),
        (
            lambda: replay_learning_policy(
                beta_ts(0),
                dataclasses.replace(_data(), pscores=np.full(50, 2.0)),
                np.random.default_rng(0),
            ),
            r"pscores must be in \(0, 1\]; first bad rows \[0, 1, 2, 3, 4\]",
        ),
        (
            lambda: replay_learning_policy(
                make_policy(CONFIG, bernoulli_registry(5), 0),
                dataclasses.replace(_data(), arm_ids=("arm:1", "arm:0", "arm:2", "arm:3")),
                np.random.default_rng(0),
            ),
            r"arm index 0 is 'arm:1' in the log but 'arm:0' in the policy's registry",
        ),
        (
            lambda: replay_learning_policy(
                make_policy(LinearGaussianConfig(n_features=2), bernoulli_registry(4), 0),
                _data(),
                np.random.default_rng(0),
            ),
            "LinearGaussianPolicy needs contexts",
        ),
        (
            lambda: replay_learning_policy(
                beta_ts(0),
                dataclasses.replace(
                    _data(),
                    cand_ptr=np.arange(51, dtype=np.int64),
                    cand_idx=np.full(50, 9, dtype=np.int64),
                ),
                np.random.default_rng(0),
            ),
            r"cand_idx must be arm indices in \[0, 4\)",
        ),
    ],
)
def test_invalid_inputs(call, match):
    with pytest.raises(InvalidInputError, match=match):
        call()


def _uniform_log_with_subsets(n: int, k: int, d: int, seed: int) -> LoggedData:
    """Uniformly logged rounds over random candidate subsets, with contexts."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, k + 1, n)
    cands = [rng.choice(k, s, replace=False) for s in sizes]
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    actions = np.array([rng.choice(c) for c in cands], dtype=np.int64)
    return LoggedData(
        arm_ids=tuple(f"arm:{a}" for a in range(k)),
        actions=actions,
        rewards=(rng.random(n) < 0.1 + 0.1 * (actions % 4)).astype(np.float64),
        pscores=1.0 / sizes,
        contexts=rng.normal(size=(n, d)),
        cand_ptr=ptr,
        cand_idx=np.concatenate(cands).astype(np.int64),
    )


def _reference_walk(policy, data: LoggedData) -> list[float]:
    """Round by round, as the estimator is defined (the bank's redraws narrowed to the
    log's widest round, as the replay narrows them)."""
    out = []
    ptr, idx = data.cand_ptr, data.cand_idx
    with policy.bank_in_use(int(np.diff(ptr).max())):
        for i in range(data.n_rounds):
            x = None if policy.n_features is None else data.contexts[i]
            d = policy.decide(idx[ptr[i] : ptr[i + 1]], x)
            if d.arm_index == data.actions[i]:
                policy.update(d.arm_index, float(data.rewards[i]), x)
                out.append(float(data.rewards[i]))
    return out


@pytest.mark.parametrize(
    "config",
    [
        BetaBernoulliConfig(bank_rows=64, refresh_every=8),
        LinearGaussianConfig(n_features=3, bank_rows=64),
        LinearGaussianConfig(n_features=3, bank_rows=64, half_life=200),
    ],
    ids=["beta", "linear", "linear_forgetting"],
)
def test_batched_walk_is_exactly_the_round_by_round_replay(config):
    data = _uniform_log_with_subsets(3000, 6, 3, seed=2)
    if config.kind == "beta_bernoulli":
        data = dataclasses.replace(data, contexts=None)
    batched, reference = (make_policy(config, bernoulli_registry(6), seed=9) for _ in range(2))
    res = replay_learning_policy(batched, data, np.random.default_rng(0))
    ref = _reference_walk(reference, data)
    assert res.n_accepted == len(ref) > 300
    np.testing.assert_array_equal(res.curve, np.cumsum(ref) / np.arange(1, len(ref) + 1))
    assert batched.stream_position == reference.stream_position == 3000
    for name, value in reference.state.snapshot().items():
        np.testing.assert_array_equal(getattr(batched.state, name), value, err_msg=name)
