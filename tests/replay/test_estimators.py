"""Estimators against textbook references, exact identities, and coverage of the truth."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import InvalidInputError
from allocator.replay import DM, DR, IPS, SNDR, SNIPS, BanditFeedback, SwitchDR, diagnostics
from tests import naive

ESTIMATORS = [IPS, SNIPS, DM, DR, SNDR]


def simulate(seed: int, n: int = 2000):
    """Context-free K=5 world: logging p, target π, true means μ, a biased reward model."""
    rng = np.random.default_rng(seed)
    mu = np.array([0.1, 0.3, 0.5, 0.2, 0.6])
    p_log = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    pi = np.array([0.05, 0.05, 0.3, 0.1, 0.5])
    actions = rng.choice(5, size=n, p=p_log)
    reward = (rng.random(n) < mu[actions]).astype(float)
    q = mu + np.array([0.05, -0.05, 0.1, 0.0, -0.1])  # a wrong reward model
    data = BanditFeedback(reward, p_log[actions], pi[actions], q[actions], np.full(n, pi @ q))
    return data, float(pi @ mu)


@pytest.mark.parametrize("clip", [None, 3.0])
def test_estimators_match_textbook_references(clip):
    data, _ = simulate(0, 300)
    ref = naive.ope(*[list(a) for a in data], clip=clip)
    for est in ESTIMATORS:
        assert est(clip=clip).estimate(data) == pytest.approx(ref[est.name], abs=1e-12)


def test_ips_and_snips_of_the_logging_policy_equal_the_mean_reward():
    data, _ = simulate(1, 1000)
    on_policy = data._replace(action_prob=data.pscore)
    mean = float(np.mean(data.reward))
    assert IPS().estimate(on_policy) == mean
    assert SNIPS().estimate(on_policy) == mean
    d = diagnostics(on_policy)
    assert d.effective_sample_size == pytest.approx(1000.0) and d.max_weight == 1.0


def coverage(n_seeds: int) -> dict[str, float]:
    hits = {"ips": 0, "dr": 0}
    for seed in range(n_seeds):
        data, truth = simulate(100 + seed)
        rng = np.random.default_rng(seed)
        for est in (IPS(), DR()):
            e = est.estimate_interval(data, rng, n_boot=200)
            hits[est.name] += e.low <= truth <= e.high
    return {k: v / n_seeds for k, v in hits.items()}


def test_intervals_cover_the_truth_small():
    rates = coverage(20)
    print("coverage over 20 seeds:", rates)
    assert min(rates.values()) >= 0.75


@pytest.mark.slow
def test_intervals_cover_the_truth_in_85_percent_of_100_seeds():
    rates = coverage(100)
    print("coverage over 100 seeds:", rates)
    assert min(rates.values()) >= 0.85


def test_dr_and_ips_are_close_to_the_truth_with_a_wrong_model():
    data, truth = simulate(7, 50_000)
    for est in (IPS(), DR(), SNIPS(), SNDR()):
        assert est.estimate(data) == pytest.approx(truth, abs=0.01)
    assert DM().estimate(data) != pytest.approx(truth, abs=0.01)  # the model is biased


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"pscore": np.array([0.5, 0.0, 0.5])},
            r"pscore must be in \(0, 1\]; first bad rows \[1\]",
        ),
        ({"pscore": np.array([0.5, 1.5, 0.5])}, r"pscore must be in \(0, 1\]"),
        ({"reward": np.array([1.0, np.nan, 0.0])}, r"reward must be finite; first bad rows \[1\]"),
        ({"action_prob": np.array([0.5, 0.5])}, r"action_prob has shape \(2,\), expected \(3,\)"),
        ({"action_prob": np.array([-0.1, 0.5, 0.5])}, r"action_prob must be in \[0, 1\]"),
    ],
)
def test_bad_feedback_is_named(change, match):
    base = BanditFeedback(np.array([1.0, 0.0, 1.0]), np.full(3, 0.5), np.full(3, 0.5))
    with pytest.raises(InvalidInputError, match=match):
        IPS().estimate(base._replace(**change))


def test_model_estimators_need_the_model():
    base = BanditFeedback(np.array([1.0, 0.0]), np.full(2, 0.5), np.full(2, 0.5))
    with pytest.raises(InvalidInputError, match="q_logged is required"):
        DR().estimate(base)


@pytest.mark.parametrize("tau", [0.5, 2.0, 4.0, np.inf])
def test_switch_dr_matches_its_reference(tau):
    data, _ = simulate(3, 400)
    want = naive.switch_dr(*[list(a) for a in data], tau=tau)
    assert SwitchDR(tau=tau).estimate(data) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_switch_dr_needs_a_positive_threshold(tau):
    with pytest.raises(InvalidInputError, match=r"tau = .*: expected a number > 0"):
        SwitchDR(tau=tau)


def test_shared_bootstrap_replicates_give_each_estimator_its_own_interval():
    from allocator.replay.estimators import estimate_intervals

    data, _ = simulate(5)
    together = estimate_intervals([IPS(), SNIPS(), DR()], data, np.random.default_rng(9), 50)
    # the first replicate stream is the one a lone estimator draws: identical intervals
    for est in (IPS(), SNIPS(), DR()):
        alone = est.estimate_interval(data, np.random.default_rng(9), 50)
        assert together[est.name] == alone
    assert together["ips"] != together["snips"]
    with pytest.raises(InvalidInputError, match="n_boot = 5"):
        estimate_intervals([IPS()], data, np.random.default_rng(0), 5)


@pytest.mark.parametrize(
    ("pscore", "clip", "ess"),
    [(1e-200, None, 3.0), (0.5, 1e-300, 3.0), (np.array([1e-200, 0.5, 0.5]), None, 1.0)],
)
def test_diagnostics_stay_finite_at_extreme_weights(pscore, clip, ess):
    """ESS is scale-free: huge weights do not overflow (w·w) nor tiny ones underflow."""
    fb = BanditFeedback(np.zeros(3), np.broadcast_to(pscore, (3,)).copy(), np.ones(3))
    d = diagnostics(fb, clip)
    assert d.effective_sample_size == pytest.approx(ess)
    assert np.isfinite(d.max_weight)
