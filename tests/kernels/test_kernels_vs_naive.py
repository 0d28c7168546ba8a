"""Every kernel against its slow reference in tests/naive.py, on the same inputs and seed."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.kernels import beta as kb
from allocator.kernels import choice as ck
from allocator.kernels import linear as kl
from allocator.kernels import normal_gamma as kng
from allocator.kernels import per_arm as kpa
from allocator.kernels import shared_linear as ksl
from allocator.kernels.random import next_uniform
from tests import naive


def test_uniform_stream_matches_reference():
    state = np.array([987654321, 5], dtype=np.uint64)
    got = [next_uniform(state) for _ in range(50)]
    assert got == naive.uniforms(987654321, 5, 50)
    assert int(state[1]) == 55


@pytest.mark.parametrize("gamma", [1.0, 0.97])
def test_beta_updates_match_reference(rng, gamma):
    k = 4
    arms = rng.integers(0, k, 300)
    rewards = rng.random(300).round(2)
    clock = np.zeros(1, dtype=np.int64)
    t_last = np.zeros(k, dtype=np.int64)
    s1, s0 = np.zeros(k), np.zeros(k)
    dirty = np.zeros(k, dtype=np.bool_)
    kb.update_beta_batch(arms, rewards, gamma, clock, t_last, s1, s0, dirty)
    a0, b0 = np.full(k, 2.0), np.full(k, 3.0)
    alpha, beta, mean, sd = np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    kb.beta_posterior(np.arange(k), gamma, clock, t_last, s1, s0, a0, b0, alpha, beta, mean, sd)
    for a in range(k):
        steps = [i + 1 for i in np.flatnonzero(arms == a)]
        ra, rb = naive.beta_posterior(rewards[arms == a], steps, 300, gamma, 2.0, 3.0)
        assert alpha[a] == pytest.approx(ra, abs=1e-9)
        assert beta[a] == pytest.approx(rb, abs=1e-9)
        assert mean[a] == pytest.approx(ra / (ra + rb), abs=1e-12)
    assert dirty.all()


@pytest.mark.parametrize("gamma", [1.0, 0.95])
def test_normal_gamma_updates_match_reference(rng, gamma):
    k = 3
    arms = rng.integers(0, k, 200)
    rewards = rng.normal(5.0, 2.0, 200)
    clock = np.zeros(1, dtype=np.int64)
    t_last = np.zeros(k, dtype=np.int64)
    sn, sx, sxx = np.zeros(k), np.zeros(k), np.zeros(k)
    dirty = np.zeros(k, dtype=np.bool_)
    kng.update_normal_gamma_batch(arms, rewards, gamma, clock, t_last, sn, sx, sxx, dirty)
    m0, k0, al0, be0 = np.full(k, 1.0), np.full(k, 0.5), np.full(k, 2.0), np.full(k, 3.0)
    out = [np.empty(k) for _ in range(6)]
    kng.normal_gamma_posterior(
        np.arange(k), gamma, clock, t_last, sn, sx, sxx, m0, k0, al0, be0, *out
    )
    for a in range(k):
        steps = [i + 1 for i in np.flatnonzero(arms == a)]
        ref = naive.normal_gamma_posterior(
            rewards[arms == a], steps, 200, gamma, 1.0, 0.5, 2.0, 3.0
        )
        np.testing.assert_allclose(
            [out[0][a], out[1][a], out[2][a], out[3][a]], ref, rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_linear_updates_match_reference(rng, gamma):
    k, d = 3, 5
    arms = rng.integers(0, k, 150)
    xs = rng.normal(size=(150, d))
    rewards = rng.normal(size=150)
    clock = np.zeros(1, dtype=np.int64)
    t_last = np.zeros(k, dtype=np.int64)
    g, h, count = np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k)
    dirty = np.zeros(k, dtype=np.bool_)
    lam, mu0 = 2.0, rng.normal(size=(k, d))
    a_inv = np.repeat(np.eye(d)[None] / lam, k, axis=0)
    mu = mu0.copy()
    work = np.zeros((2 * d + 1, d))
    kl.update_linear_batch(
        arms, xs, rewards, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty
    )
    for a in range(k):
        sel = np.flatnonzero(arms == a)
        w = naive.discounted_weights([i + 1 for i in sel], 150, gamma)
        decay = gamma ** (150 - t_last[a])
        np.testing.assert_allclose(decay * g[a], (xs[sel] * w[:, None]).T @ xs[sel], atol=1e-9)
        np.testing.assert_allclose(
            decay * h[a], (xs[sel] * (w * rewards[sel])[:, None]).sum(0), atol=1e-9
        )
        # The online posterior (as of the arm's last update) equals the ridge solve.
        ref_mean, ref_a = naive.ridge_posterior(
            xs[sel], rewards[sel], list(sel + 1), int(t_last[a]), gamma, lam, mu0[a]
        )
        np.testing.assert_allclose(mu[a], ref_mean, atol=1e-9)
        np.testing.assert_allclose(a_inv[a], np.linalg.inv(ref_a), atol=1e-9)


def test_spd_inverse_matches_numpy(rng):
    for d in (1, 2, 5, 16):
        b = rng.normal(size=(d, d))
        a = b @ b.T + 0.1 * np.eye(d)
        out, work = np.zeros((d, d)), np.zeros((d, d))
        kl.spd_inverse(a, out, work)
        np.testing.assert_allclose(out, np.linalg.inv(a), rtol=1e-9, atol=1e-9)


def test_shared_update_matches_outer_products(rng):
    da, dc = 3, 4
    feats = rng.normal(size=(6, da))
    arms = rng.integers(0, 6, 40)
    xs = rng.normal(size=(40, dc))
    rewards = rng.random(40)
    g, h = np.zeros((da * dc, da * dc)), np.zeros(da * dc)
    clock = np.zeros(1, dtype=np.int64)
    dim = da * dc
    mu, a_inv, phi, u = np.zeros(dim), np.eye(dim), np.zeros(dim), np.zeros(dim)
    ksl.update_shared_batch(feats, arms, xs, rewards, 0.99, 1.0, g, h, mu, a_inv, phi, u, clock)
    phis = np.array([np.outer(feats[a], x).ravel() for a, x in zip(arms, xs, strict=True)])
    w = 0.99 ** np.arange(39, -1, -1)
    np.testing.assert_allclose(g, (phis * w[:, None]).T @ phis, atol=1e-9)
    np.testing.assert_allclose(h, (phis * (w * rewards)[:, None]).sum(0), atol=1e-9)
    assert clock[0] == 40
    # Without forgetting the online posterior is the ridge solution after every update.
    g, h, mu, a_inv = np.zeros((dim, dim)), np.zeros(dim), np.zeros(dim), np.eye(dim) / 1.5
    ksl.update_shared_batch(feats, arms, xs, rewards, 1.0, 1.5, g, h, mu, a_inv, phi, u, clock)
    ref_mean, ref_a = naive.ridge_posterior(
        phis, rewards, list(range(40)), 40, 1.0, 1.5, np.zeros(dim)
    )
    np.testing.assert_allclose(mu, ref_mean, atol=1e-9)
    np.testing.assert_allclose(a_inv, np.linalg.inv(ref_a), atol=1e-9)


def test_bank_win_shares_match_reference_slow_and_fast_paths(rng):
    cap, m = 50, 64
    bank = rng.random((cap, m)).astype(np.float32)
    winner = bank.argmax(axis=0).astype(np.int64)
    pos = np.full(cap, -1, dtype=np.int64)
    active = np.ones(cap, dtype=np.bool_)
    err = np.zeros(1, dtype=np.int64)
    best, arg, p = np.empty(m), np.empty(m, dtype=np.int64), np.empty(cap)
    for cand in (rng.choice(cap, 7, replace=False), np.arange(cap)[::-1].copy()):
        cand = cand.astype(np.int64)
        assert ck.mark_candidates(cand, active, pos, err) == ck.OK
        ck.bank_win_shares(bank, cand, pos, winner, best, arg, p)
        ck.clear_marks(cand, cand.shape[0], pos)
        np.testing.assert_allclose(p[: cand.shape[0]], naive.win_shares(bank[cand]), atol=1e-12)
    assert (pos == -1).all()


def test_refresh_winners_incremental_equals_full(rng):
    cap, m = 30, 16
    bank = rng.random((cap, m)).astype(np.float32)
    winner = np.full(m, -1, dtype=np.int64)
    flags = np.zeros(cap, dtype=np.bool_)
    kpa.refresh_winners(bank, cap, np.zeros(0, dtype=np.int64), flags, winner, True)
    np.testing.assert_array_equal(winner, bank.argmax(axis=0))
    for _ in range(20):
        redrawn = rng.choice(cap, 3, replace=False).astype(np.int64)
        bank[redrawn] = rng.random((3, m)).astype(np.float32)
        flags[:] = False
        flags[redrawn] = True
        kpa.refresh_winners(bank, cap, redrawn, flags, winner, False)
        np.testing.assert_array_equal(winner, bank.argmax(axis=0))


def test_gauss_win_shares_match_reference(rng):
    """The scan compares float32 scores: the shares are those of the float32 scores, ties
    included (three candidates share one score row, so only the first of them wins)."""
    n, m = 9, 128
    mean, sd = rng.normal(size=n), rng.random(n)
    mean[5:8], sd[5:8] = mean.max(), sd[5]
    z = rng.standard_normal((12, m)).astype(np.float32)
    z[5:8] = z[5]
    best, arg, p = np.empty(m), np.empty(m, dtype=np.int64), np.empty(n)
    ck.gauss_win_shares(mean, sd, z, n, best, arg, p)
    scores = mean[:, None].astype(np.float32) + sd[:, None].astype(np.float32) * z[:n]
    assert scores.dtype == np.float32
    np.testing.assert_allclose(p, naive.win_shares(scores), atol=1e-12)
    assert 0 < p[5] < 1 and p[6] == p[7] == 0.0


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_mix_and_draw_matches_reference(rng, eps):
    for _ in range(200):
        p = rng.dirichlet(np.ones(5))
        state = np.array([7, rng.integers(0, 10**6)], dtype=np.uint64)
        u = naive.uniforms(7, int(state[1]), 1)[0]
        q_ref, j_ref = naive.mix_and_draw(p, eps, u)
        q = p.copy()
        ck.mix_uniform(q, 5, eps)  # the pipeline's ε-mix, then its contract-free draw
        assert ck.draw_index(q, 5, state) == j_ref
        np.testing.assert_allclose(q, q_ref, atol=1e-15)


def test_linear_and_shared_scores_match_reference(rng):
    k, d = 6, 4
    x = rng.normal(size=d)
    mu = rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    a_inv = np.linalg.inv(np.einsum("kij,klj->kil", a, a) + np.eye(d))
    cand = np.array([4, 0, 2], dtype=np.int64)
    mean, sd = np.empty(3), np.empty(3)
    kl.linear_scores(x, cand, mu, a_inv, 0.7, mean, sd)
    ref_mean, ref_sd = naive.linear_scores(x, cand, mu, a_inv, 0.7)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-12)
    np.testing.assert_allclose(sd, ref_sd, atol=1e-12)

    da, dc = 3, d
    feats = rng.normal(size=(k, da))
    mu_s = rng.normal(size=da * dc)
    b = rng.normal(size=(da * dc, da * dc))
    a_inv_s = np.linalg.inv(b @ b.T + np.eye(da * dc))
    w_buf, p_buf = np.empty(da), np.empty((da, da))
    ksl.shared_scores(x, cand, feats, mu_s, a_inv_s, 0.5, w_buf, p_buf, mean, sd)
    ref_mean, ref_sd = naive.shared_scores(x, cand, feats, mu_s, a_inv_s, 0.5)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-10)
    np.testing.assert_allclose(sd, ref_sd, atol=1e-10)


def test_joint_win_shares_match_reference(rng):
    k, da, dc, m_rows = 9, 4, 3, 500
    x = rng.normal(size=dc)
    feats = rng.normal(size=(k, da))
    feats[2, 1:] = 0.0  # sparse rows take the skip-zeros path
    mu = rng.normal(size=da * dc) * 0.3
    b = rng.normal(size=(da * dc, da * dc))
    a_inv = np.linalg.inv(b @ b.T + np.eye(da * dc))
    z = rng.normal(size=(k, m_rows)).astype(np.float32)
    cand = np.array([7, 2, 0, 5, 3], dtype=np.int64)
    n = cand.shape[0]
    mean, sd, p = np.empty(n), np.empty(n), np.empty(n)
    w_buf, p_buf, l_buf = np.empty(da), np.empty((da, da)), np.empty((da, da))
    ksl.shared_scores(x, cand, feats, mu, a_inv, 0.4, w_buf, p_buf, mean, sd)
    best, arg = np.empty(m_rows), np.empty(m_rows, dtype=np.int64)
    ksl.joint_win_shares(cand, feats, mean, 0.4, p_buf, z, n, l_buf, best, arg, p)
    np.testing.assert_allclose(p, naive.joint_win_shares(x, cand, feats, mu, a_inv, 0.4, z))
    np.testing.assert_allclose(l_buf @ l_buf.T, p_buf, atol=1e-12)
    assert p.sum() == pytest.approx(1.0) and (p > 0).sum() >= 3


def test_psd_cholesky_of_singular_matrices_is_finite(rng):
    """A zero context folds to P = 0, a rank-deficient one to a singular P: the factor
    still reproduces P and holds no NaN (a draw from the degenerate normal)."""
    v = rng.normal(size=(4, 2))
    for a in (np.zeros((3, 3)), v @ v.T):
        out = np.full(a.shape, np.nan)
        ksl.psd_cholesky(a, out)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out @ out.T, a, atol=1e-12)
        assert (np.triu(out, 1) == 0.0).all()


def test_mark_candidates_reports_first_bad_position():
    active = np.array([True, True, False, True])
    pos = np.full(4, -1, dtype=np.int64)
    err = np.zeros(1, dtype=np.int64)
    cases = [
        (np.array([], dtype=np.int64), ck.ERR_EMPTY, None),
        (np.array([0, 7], dtype=np.int64), ck.ERR_RANGE, 1),
        (np.array([-1], dtype=np.int64), ck.ERR_RANGE, 0),
        (np.array([1, 3, 2], dtype=np.int64), ck.ERR_RETIRED, 2),
        (np.array([3, 1, 3], dtype=np.int64), ck.ERR_DUPLICATE, 2),
    ]
    for cand, code, where in cases:
        assert ck.mark_candidates(cand, active, pos, err) == code
        if where is not None:
            assert err[0] == where
        assert (pos == -1).all()
