"""Targets that are not a built policy: the logging policy, uniform, an (n, k) action
distribution, an engine config; each against its definition, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.errors import ConfigError, InvalidInputError
from allocator.replay import evaluate, target_distribution
from tests.worlds.logged import log_rounds, make_world


def _log():
    return log_rounds(make_world(2), 4000, np.random.default_rng(2))


@pytest.mark.heavy
def test_logging_target_is_the_logged_distribution_and_its_value_the_logged_mean():
    lg = _log()
    data = lg.data
    np.testing.assert_array_equal(target_distribution("logging", data), data.cand_prob)
    ev = evaluate(data, "logging", estimators=("ips", "dr"), reward_model="auto",
                  rng=np.random.default_rng(0))  # fmt: skip
    mean = float(data.rewards.mean())
    assert ev["ips"].value == pytest.approx(mean, abs=1e-12)  # every weight is one
    assert ev["ips"].low <= mean <= ev["ips"].high and ev["dr"].low <= mean <= ev["dr"].high


@pytest.mark.heavy
def test_uniform_target_covers_the_worlds_uniform_value():
    lg = _log()
    data = lg.data
    ptr, idx = data.candidates()
    prob = target_distribution("uniform", data)
    np.testing.assert_allclose(prob, np.repeat(1.0 / np.diff(ptr), np.diff(ptr)))
    mu = make_world(2).mean_reward(data.contexts)
    rows = np.repeat(np.arange(data.n_rounds), np.diff(ptr))
    truth = float(np.bincount(rows, weights=prob * mu[rows, idx]).mean())
    ev = evaluate(data, "uniform", estimators=("ips", "dr"), reward_model="auto",
                  rng=np.random.default_rng(0))  # fmt: skip
    print(f"uniform truth {truth:.4f}", ev.estimates)
    for name in ("ips", "dr"):
        assert ev[name].low <= truth <= ev[name].high


def test_dense_matrix_target_equals_its_per_candidate_form():
    lg = _log()
    data = lg.data
    ptr, idx = data.candidates()
    dense = np.zeros((data.n_rounds, data.n_arms))
    rows = np.repeat(np.arange(data.n_rounds), np.diff(ptr))
    dense[rows, idx] = lg.target
    np.testing.assert_allclose(target_distribution(dense, data), lg.target)
    a = evaluate(data, dense, estimators=("ips",), rng=np.random.default_rng(0))
    b = evaluate(data, lg.target, estimators=("ips",), rng=np.random.default_rng(0))
    assert a["ips"] == b["ips"]


def test_engine_config_target_is_a_fresh_policy_over_the_log_arms():
    data = _log().data
    config = {"policy": {"kind": "beta_bernoulli", "rule": "greedy", "epsilon": 0.2}}
    prob = target_distribution(config, data)
    ptr, _ = data.candidates()
    sizes = np.diff(ptr)
    # untrained greedy with ε: the tie goes to the first candidate, ε is spread uniformly
    want = np.repeat(0.2 / sizes, sizes)
    want[ptr[:-1]] += 0.8
    np.testing.assert_allclose(prob, want, atol=1e-12)


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ("optimal", InvalidInputError, "target 'optimal'"),
        (np.full((3, 4), 0.25), InvalidInputError, r"shape \(3, 4\), expected \(4000, 4\)"),
        ({"policy": {"kind": "nope"}}, ConfigError, "kind"),
        ({"policy": {"kind": "shared_linear", "n_context_features": 2, "n_arm_features": 2}},
         ConfigError, "arm features"),
    ],
)  # fmt: skip
def test_bad_targets_are_refused(target, error, match):
    with pytest.raises(error, match=match):
        target_distribution(target, _log().data)


def test_mass_on_a_non_candidate_is_refused_not_dropped():
    data = _log().data
    dense = np.full((data.n_rounds, data.n_arms), 1.0 / data.n_arms)  # subsets: some not eligible
    with pytest.raises(InvalidInputError, match="not candidates"):
        target_distribution(dense, data)


def test_logging_target_needs_the_logged_distributions():
    import dataclasses

    data = dataclasses.replace(_log().data, cand_prob=None)
    with pytest.raises(InvalidInputError, match="logging probability"):
        target_distribution("logging", data)


def test_the_logger_of_a_log_without_its_distributions_is_scored_on_policy():
    """Only the chosen arm's propensity: every weight is one, so IPS and SNIPS are the mean
    reward, with the interval the full log gives its logger; DR / DM are skipped with the
    reason, and a request of model-based estimators alone is refused."""
    import dataclasses

    full = _log().data
    data = dataclasses.replace(full, cand_prob=None)
    names = ("ips", "snips", "dm", "dr")
    ev = evaluate(data, "logging", estimators=names, reward_model="auto",
                  rng=np.random.default_rng(0))  # fmt: skip
    mean = float(data.rewards.mean())
    assert ev["ips"].value == pytest.approx(mean, abs=1e-12)
    assert ev["snips"].value == pytest.approx(mean, abs=1e-12)
    # the same sequence as the logger scored through its logged distributions
    ref = evaluate(full, "logging", estimators=("ips",), rng=np.random.default_rng(0))
    assert ev["ips"] == ref["ips"]
    assert ev["snips"].low <= ev["ips"].low and ev["snips"].high >= ev["ips"].high
    assert ev.diagnostics.effective_sample_size == pytest.approx(data.n_rounds)
    assert ev.diagnostics.max_weight == 1.0 and ev.diagnostics.zero_weight_share == 0.0
    assert set(ev.skipped) == {"dm", "dr"}
    with pytest.raises(InvalidInputError, match="only the chosen arm's"):
        ev["dr"]
    with pytest.raises(InvalidInputError, match="dr needs the logging policy's probability"):
        evaluate(data, "logging", estimators=("dr",), reward_model="auto",
                 rng=np.random.default_rng(0))  # fmt: skip
    # clip caps the weights of one as it would any weight
    clipped = evaluate(data, "logging", estimators=("ips",), clip=0.5,
                       rng=np.random.default_rng(0))  # fmt: skip
    assert clipped["ips"].value == pytest.approx(0.5 * mean, abs=1e-12)
