"""The logistic kernels against the dense references in tests/naive.py."""

from __future__ import annotations

import numpy as np
import pytest

from allocator.kernels import link as klink
from allocator.kernels import logistic as klg
from tests import naive


@pytest.mark.parametrize("gamma", [1.0, 0.97])
def test_logistic_updates_match_dense_online_laplace(rng, gamma):
    k, d, n = 3, 4, 200
    arms = rng.integers(0, k, n)
    xs = rng.normal(size=(n, d))
    ys = (rng.random(n) < 0.4).astype(float)
    ys[::7] = 0.3  # soft labels are allowed
    clock = np.zeros(1, dtype=np.int64)
    t_last = np.zeros(k, dtype=np.int64)
    g, h, count = np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k)
    dirty = np.zeros(k, dtype=np.bool_)
    lam, mu0 = 2.0, rng.normal(size=(k, d)) * 0.3
    a_inv = np.repeat(np.eye(d)[None] / lam, k, axis=0)
    mu = mu0.copy()
    work = np.zeros((2 * d + 2, d))
    klg.update_logistic_batch(
        arms, xs, ys, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty
    )
    assert clock[0] == n and dirty.all()
    for a in range(k):
        sel = np.flatnonzero(arms == a)
        steps = np.concatenate([[0], sel + 1])
        decays = gamma ** np.diff(steps).astype(float)
        ref_mean, ref_a = naive.laplace_online(xs[sel], ys[sel], decays, lam, mu0[a])
        assert t_last[a] == sel[-1] + 1
        np.testing.assert_allclose(mu[a], ref_mean, atol=1e-10)
        np.testing.assert_allclose(a_inv[a], np.linalg.inv(ref_a), atol=1e-10)
        np.testing.assert_allclose(g[a] + lam * np.eye(d), ref_a, atol=1e-10)


def test_logistic_step_is_the_extended_kalman_step(rng):
    """Information form (G, h) and the textbook step m + A'⁻¹ x (y − p) agree exactly."""
    d, lam = 5, 1.5
    mu0 = rng.normal(size=(1, d))
    x, y = rng.normal(size=d), 1.0
    mu, a_inv = mu0.copy(), np.eye(d)[None] / lam
    g, h, count = np.zeros((1, d, d)), np.zeros((1, d)), np.zeros(1)
    args = (np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), g, h, count, mu0)
    klg.update_logistic(
        0, x, y, 1.0, lam, *args, mu, a_inv, np.zeros((2 * d + 2, d)), np.zeros(1, np.bool_)
    )
    ref_m, ref_a = naive.laplace_step(mu0[0], lam * np.eye(d), x, y)
    np.testing.assert_allclose(mu[0], ref_m, rtol=0, atol=1e-14)
    np.testing.assert_allclose(a_inv[0], np.linalg.inv(ref_a), rtol=0, atol=1e-14)


def _shared_reference(feats, arms, xs, ys, lam, gamma, linearise_at=None):
    dim = feats.shape[1] * xs.shape[1]
    phis = np.array([np.outer(feats[a], x).ravel() for a, x in zip(arms, xs, strict=True)])
    if linearise_at is None:  # fresh mean before every step
        return naive.laplace_online(phis, ys, np.ones(len(ys)), lam, np.zeros(dim))
    g, h = np.zeros((dim, dim)), np.zeros(dim)
    for phi, y in zip(phis, ys, strict=True):
        z = phi @ linearise_at
        p = naive.sigmoid(z)
        g = gamma * g + p * (1 - p) * np.outer(phi, phi)
        h = gamma * h + phi * (p * (1 - p) * z + y - p)
    return g, h


@pytest.mark.parametrize("gamma", [1.0, 0.98])
def test_shared_logistic_update_matches_reference(rng, gamma):
    da, dc, n, lam = 2, 3, 60, 1.5
    dim = da * dc
    feats = rng.normal(size=(5, da))
    arms = rng.integers(0, 5, n)
    xs = rng.normal(size=(n, dc))
    ys = (rng.random(n) < 0.5).astype(float)
    mu = rng.normal(size=dim) * 0.2 if gamma != 1.0 else np.zeros(dim)
    start = mu.copy()
    g, h = np.zeros((dim, dim)), np.zeros(dim)
    a_inv, phi, u = np.eye(dim) / lam, np.zeros(dim), np.zeros(dim)
    clock = np.zeros(1, dtype=np.int64)
    klg.update_shared_logistic_batch(
        feats, arms, xs, ys, gamma, lam, g, h, mu, a_inv, phi, u, clock
    )
    assert clock[0] == n
    if gamma == 1.0:  # posterior kept current: the dense online Laplace fit
        ref_mean, ref_a = _shared_reference(feats, arms, xs, ys, lam, gamma)
        np.testing.assert_allclose(mu, ref_mean, atol=1e-10)
        np.testing.assert_allclose(a_inv, np.linalg.inv(ref_a), atol=1e-10)
        np.testing.assert_allclose(g + lam * np.eye(dim), ref_a, atol=1e-10)
    else:  # forgetting: statistics move, linearised at the (unchanged) refreshed mean
        np.testing.assert_array_equal(mu, start)
        ref_g, ref_h = _shared_reference(feats, arms, xs, ys, lam, gamma, linearise_at=start)
        np.testing.assert_allclose(g, ref_g, atol=1e-10)
        np.testing.assert_allclose(h, ref_h, atol=1e-10)


def test_predictive_kernels_match_the_probit_formula(rng):
    k, d = 4, 3
    mu = rng.normal(size=(k, d))
    b = rng.normal(size=(k, d, d))
    a_inv = b @ np.swapaxes(b, 1, 2) + 0.1 * np.eye(d)
    arms = np.array([0, 3, 1, 1, 2])
    xs = rng.normal(size=(5, d))
    out = np.empty(5)
    klg.predict_disjoint(arms, xs, mu, a_inv, np.empty(1), np.empty(1), out)
    m = np.einsum("nd,nd->n", xs, mu[arms])
    s2 = np.einsum("nd,nde,ne->n", xs, a_inv[arms], xs)
    np.testing.assert_allclose(out, naive.sigmoid(m / np.sqrt(1 + np.pi * s2 / 8)), atol=1e-12)
    means, sds = m.copy(), 2.0 * np.sqrt(s2)  # scores sampled at exploration scale 2
    klink.apply_link(means, sds, 2.0, 5, klink.LINK_LOGIT)
    np.testing.assert_allclose(means, out, atol=1e-12)
    klink.apply_link(m, sds, 2.0, 5, klink.LINK_IDENTITY)
    np.testing.assert_array_equal(m, np.einsum("nd,nd->n", xs, mu[arms]))
    assert klink.sigmoid(-800.0) == 0.0 and klink.sigmoid(800.0) == 1.0
