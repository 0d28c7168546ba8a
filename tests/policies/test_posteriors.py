"""Posteriors reached through the policy API equal their closed forms, with and without
forgetting, and new arms start from their group prior."""

from __future__ import annotations

import numpy as np
import pytest

from allocator import (
    ArmRegistry,
    BetaBernoulliConfig,
    LinearGaussianConfig,
    NormalGammaConfig,
    SharedLinearConfig,
    make_policy,
)
from allocator.config import BetaPrior, LinearPrior, NormalGammaPrior
from tests import naive
from tests.conftest import make_registry


@pytest.mark.parametrize("half_life", [None, 40.0])
def test_beta_posterior_closed_form(rng, half_life):
    cfg = BetaBernoulliConfig(prior=BetaPrior(alpha=2, beta=5), half_life=half_life)
    pol = make_policy(cfg, make_registry(5), seed=0)
    arms = rng.integers(0, 5, 500)
    rewards = (rng.random(500) < 0.3).astype(float)
    for a, r in zip(arms[:250], rewards[:250], strict=True):
        pol.update(int(a), float(r))
    pol.update_batch(arms[250:], rewards[250:])
    alpha, beta = pol.posterior(np.arange(5))
    gamma = cfg.gamma
    for a in range(5):
        steps = [i + 1 for i in np.flatnonzero(arms == a)]
        ref = naive.beta_posterior(rewards[arms == a], steps, 500, gamma, 2.0, 5.0)
        assert abs(alpha[a] - ref[0]) < 1e-9 and abs(beta[a] - ref[1]) < 1e-9


@pytest.mark.parametrize("discount", [None, 0.98])
def test_normal_gamma_posterior_closed_form(rng, discount):
    prior = NormalGammaPrior(mean=10.0, kappa=2.0, alpha=3.0, beta=4.0)
    pol = make_policy(NormalGammaConfig(prior=prior, discount=discount), make_registry(3), 1)
    arms = rng.integers(0, 3, 300)
    rewards = rng.gamma(2.0, 20.0, 300)
    pol.update_batch(arms, rewards)
    got = np.array(pol.posterior(np.arange(3))).T
    for a in range(3):
        steps = [i + 1 for i in np.flatnonzero(arms == a)]
        ref = naive.normal_gamma_posterior(
            rewards[arms == a], steps, 300, discount or 1.0, 10.0, 2.0, 3.0, 4.0
        )
        np.testing.assert_allclose(got[a], ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("discount", [None, 0.99])
def test_linear_posterior_equals_ridge_solve(rng, discount):
    d = 6
    cfg = LinearGaussianConfig(
        n_features=d,
        prior_precision=2.5,
        discount=discount,
        group_priors={"g": LinearPrior(mean=[0.5] * d)},
    )
    pol = make_policy(cfg, make_registry(4), seed=2)
    arms = rng.integers(0, 4, 400)
    xs = rng.normal(size=(400, d))
    rewards = rng.normal(size=400)
    for i in range(400):
        pol.update(int(arms[i]), float(rewards[i]), xs[i])
    pol.refresh()
    mean, prec = pol.posterior(np.arange(4))
    for a in range(4):
        sel = np.flatnonzero(arms == a)
        ref_mean, ref_a = naive.ridge_posterior(
            xs[sel], rewards[sel], list(sel + 1), 400, discount or 1.0, 2.5, np.full(d, 0.5)
        )
        np.testing.assert_allclose(mean[a], ref_mean, atol=1e-9)
        np.testing.assert_allclose(prec[a], ref_a, atol=1e-9)
        np.testing.assert_allclose(pol.state.mu[a], ref_mean, atol=1e-9)
        np.testing.assert_allclose(pol.state.a_inv[a], np.linalg.inv(ref_a), atol=1e-9)


def test_shared_posterior_equals_ridge_solve(rng):
    da, dc = 3, 4
    feats = rng.normal(size=(10, da))
    cfg = SharedLinearConfig(
        n_context_features=dc, n_arm_features=da, prior_precision=1.5, discount=0.995
    )
    pol = make_policy(cfg, make_registry(10), seed=3, arm_features=feats)
    arms = rng.integers(0, 10, 300)
    xs = rng.normal(size=(300, dc))
    rewards = rng.random(300)
    pol.update_batch(arms, rewards, xs)
    phis = np.array([np.outer(feats[a], x).ravel() for a, x in zip(arms, xs, strict=True)])
    ref_mean, ref_a = naive.ridge_posterior(
        phis, rewards, list(range(1, 301)), 300, 0.995, 1.5, np.zeros(da * dc)
    )
    mean, prec = pol.posterior()
    np.testing.assert_allclose(mean, ref_mean, atol=1e-9)
    np.testing.assert_allclose(prec, ref_a, atol=1e-9)


def test_new_arm_starts_from_configured_group_prior():
    reg = ArmRegistry()
    reg.add(["taobao"], "taobao")
    cfg = BetaBernoulliConfig(group_priors={"mini_shop": BetaPrior(alpha=1, beta=9)})
    pol = make_policy(cfg, reg, seed=0)
    reg.add(["merchant:1", "merchant:2"], "mini_shop")
    new = pol.sync_arms()
    np.testing.assert_array_equal(new, [1, 2])
    alpha, beta = pol.posterior([0, 1, 2])
    np.testing.assert_array_equal(alpha, [1, 1, 1])
    np.testing.assert_array_equal(beta, [1, 9, 9])


def test_new_arm_empirical_prior_keeps_others_untouched():
    reg = make_registry(3, group="mini_shop")
    pol = make_policy(BetaBernoulliConfig(new_arm_prior="empirical"), reg, seed=0)
    pol.update_batch([0, 0, 1, 1], [1.0, 1.0, 0.0, 1.0])
    before = pol.posterior([0, 1, 2])
    reg.add(["arm:new"], "mini_shop")
    pol.sync_arms()
    after = pol.posterior([0, 1, 2, 3])
    np.testing.assert_array_equal(np.array(before), np.array(after)[:, :3])
    means = before[0][:2] / (before[0][:2] + before[1][:2])  # arms with data only
    m = means.mean()
    np.testing.assert_allclose([after[0][3], after[1][3]], [2 * m, 2 * (1 - m)], atol=1e-12)


def test_new_linear_arm_empirical_prior_is_group_mean(rng):
    reg = make_registry(2)
    pol = make_policy(LinearGaussianConfig(n_features=3, new_arm_prior="empirical"), reg, 0)
    for _ in range(50):
        a = int(rng.integers(0, 2))
        x = rng.normal(size=3)
        pol.update(a, float(x[0]), x)
    pol.refresh()
    reg.add(["arm:2"], "g")
    pol.sync_arms()
    np.testing.assert_allclose(pol.posterior([2])[0][0], pol.state.mu[:2].mean(axis=0), atol=1e-12)


def test_bank_draws_follow_the_posterior_distribution():
    """Beta banks (gamma-ratio sampler, grouped by parameters) and Normal–Gamma banks have the
    posterior's mean and variance, including shapes below 1."""
    pol = make_policy(
        BetaBernoulliConfig(bank_rows=20_000, prior=BetaPrior(alpha=0.3, beta=0.6)),
        make_registry(3),
        seed=0,
    )
    pol.update_batch([1, 1, 1, 2], [1.0, 0.0, 1.0, 0.0])
    pol.refresh()
    for arm, (a, b) in enumerate([(0.3, 0.6), (2.3, 1.6), (0.3, 1.6)]):
        mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        sample = pol.state.bank[arm].astype(np.float64)
        assert abs(sample.mean() - mean) < 5 * np.sqrt(var / 20_000)
        assert abs(sample.var() / var - 1) < 0.06
    prior = NormalGammaPrior(mean=2.0, kappa=1.0, alpha=3.0, beta=2.0)
    ng = make_policy(NormalGammaConfig(bank_rows=20_000, prior=prior), make_registry(1), 1)
    sample = ng.state.bank[0].astype(np.float64)
    t_var = 2.0 / (3.0 * 1.0) * (2 * 3.0) / (2 * 3.0 - 2)  # Student-t, 2α dof, scale² β/(ακ)
    assert abs(sample.mean() - 2.0) < 5 * np.sqrt(t_var / 20_000)
    assert abs(sample.var() / t_var - 1) < 0.1


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (1.0, 3.0), (2.5, 1.0), (0.4, 0.4)])
@pytest.mark.heavy
def test_fresh_bank_draws_follow_the_prior_for_every_sampler(alpha, beta):
    """A catalogue's first fill draws all arms of a group at once, in blocks, as gamma
    ratios (a shape of 1 by the exponential sampler). The
    pooled draws of 40,000 fresh arms × 8 rows follow the prior (Kolmogorov–Smirnov)."""
    from scipy.stats import beta as beta_dist
    from scipy.stats import kstest

    cfg = BetaBernoulliConfig(bank_rows=8, prior=BetaPrior(alpha=alpha, beta=beta))
    pol = make_policy(cfg, make_registry(40_000), seed=4)  # 3 blocks of arms
    rows = pol.state.bank[: pol.registry.n_arms].astype(np.float64)
    sample = rows.ravel()
    assert kstest(sample, beta_dist(alpha, beta).cdf).pvalue > 1e-4
    assert abs(np.corrcoef(rows[:-1, 0], rows[1:, 0])[0, 1]) < 5 / np.sqrt(40_000)  # independent
