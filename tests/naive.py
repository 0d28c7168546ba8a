"""Slow, obviously-correct references for every kernel (plain Python / numpy, no numba)."""

from __future__ import annotations

import numpy as np

MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def uniforms(key: int, start: int, n: int) -> list[float]:
    """The decision stream's uniforms number ``start .. start+n-1``."""
    return [(mix64(key ^ mix64(c)) >> 11) / 2.0**53 for c in range(start, start + n)]


def discounted_weights(steps: list[int], now: int, gamma: float) -> np.ndarray:
    """Weight gamma^(now - s) of an observation made at clock step s."""
    return np.array([gamma ** (now - s) for s in steps], dtype=np.float64)


def beta_posterior(rewards, steps, now, gamma, a0, b0):
    w = discounted_weights(steps, now, gamma)
    r = np.asarray(rewards, dtype=np.float64)
    return a0 + float(np.sum(w * r)), b0 + float(np.sum(w * (1 - r)))


def normal_gamma_posterior(rewards, steps, now, gamma, m0, k0, al0, be0):
    """Weighted Normal–Gamma update written the textbook way (sums, not the kernel's form)."""
    w = discounted_weights(steps, now, gamma)
    x = np.asarray(rewards, dtype=np.float64)
    n = w.sum()
    if n == 0:
        return m0, k0, al0, be0
    xbar = np.sum(w * x) / n
    kn = k0 + n
    mn = (k0 * m0 + n * xbar) / kn
    an = al0 + n / 2
    bn = be0 + 0.5 * np.sum(w * (x - xbar) ** 2) + k0 * n * (xbar - m0) ** 2 / (2 * kn)
    return mn, kn, an, bn


def ridge_posterior(xs, rewards, steps, now, gamma, lam, mu0):
    """Weighted ridge: A = λI + Σ w x xᵀ, mean = A⁻¹(λ μ0 + Σ w r x) via numpy.linalg.solve."""
    xs = np.asarray(xs, dtype=np.float64).reshape(len(rewards), -1)
    d = xs.shape[1]
    w = discounted_weights(steps, now, gamma)
    a = lam * np.eye(d) + (xs * w[:, None]).T @ xs
    b = lam * np.asarray(mu0, dtype=np.float64) + (xs * (w * np.asarray(rewards))[:, None]).sum(0)
    return np.linalg.solve(a, b), a


def win_shares(samples: np.ndarray) -> np.ndarray:
    """samples (C, M): share of columns whose first maximiser is row j."""
    c, m = samples.shape
    p = np.zeros(c)
    for col in range(m):
        best = 0
        for j in range(1, c):
            if samples[j, col] > samples[best, col]:
                best = j
        p[best] += 1.0 / m
    return p


def mix_and_draw(p: np.ndarray, eps: float, u: float) -> tuple[np.ndarray, int]:
    q = (1 - eps) * np.asarray(p, dtype=np.float64) + eps / len(p) if eps > 0 else np.array(p)
    acc = 0.0
    last = 0
    for j, pj in enumerate(q):
        if pj > 0:
            last = j
            acc += pj
            if u < acc:
                return q, j
    return q, last


def linear_scores(x, cand, mu, a_inv, v):
    mean = np.array([x @ mu[a] for a in cand])
    sd = np.array([v * np.sqrt(max(x @ a_inv[a] @ x, 0.0)) for a in cand])
    return mean, sd


def shared_scores(x, cand, features, mu, a_inv, v):
    """Build φ = vec(f ⊗ x) explicitly and evaluate φ·μ and v·sqrt(φᵀA⁻¹φ)."""
    phis = np.array([np.outer(features[a], x).ravel() for a in cand])
    mean = phis @ mu
    sd = v * np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", phis, a_inv, phis), 0.0))
    return mean, sd


def ope(reward, pscore, action_prob, q_logged, q_target, clip=None):
    """Textbook IPS, SNIPS, DM, DR, SNDR with explicit loops."""
    n = len(reward)
    w = [
        min(a / p, clip) if clip is not None else a / p
        for a, p in zip(action_prob, pscore, strict=True)
    ]
    ips = sum(w[i] * reward[i] for i in range(n)) / n
    snips = sum(w[i] * reward[i] for i in range(n)) / sum(w)
    dm = sum(q_target) / n
    dr = sum(q_target[i] + w[i] * (reward[i] - q_logged[i]) for i in range(n)) / n
    sndr = dm + sum(w[i] * (reward[i] - q_logged[i]) for i in range(n)) / sum(w)
    return {"ips": ips, "snips": snips, "dm": dm, "dr": dr, "sndr": sndr}


def ridge_reward_model(xs, arms, rewards, n_arms, l2):
    """Pooled ridge on [1, x] (intercept unpenalised), then per-arm ridge toward it.

    Arm a: argmin Σ (r − zθ)² + l2·|θ − β|², solved with numpy.linalg.solve. ``xs`` None
    means intercept only. Returns (coef (K, p), pooled β (p,)).
    """
    r = np.asarray(rewards, dtype=np.float64)
    n = r.shape[0]
    z = np.ones((n, 1)) if xs is None else np.column_stack([np.ones(n), xs])
    p = z.shape[1]
    penalty = np.eye(p)
    penalty[0, 0] = 0.0
    beta = np.linalg.solve(z.T @ z + l2 * penalty, z.T @ r)
    coef = np.empty((n_arms, p))
    for a in range(n_arms):
        rows = np.asarray(arms) == a
        za, ra = z[rows], r[rows]
        coef[a] = np.linalg.solve(za.T @ za + l2 * np.eye(p), za.T @ ra + l2 * beta)
    return coef, beta


def switch_dr(reward, pscore, action_prob, q_logged, q_target, tau):
    """Switch-DR: DM everywhere plus the DR correction only where the weight is <= tau."""
    total = 0.0
    for i in range(len(reward)):
        w = action_prob[i] / pscore[i]
        total += q_target[i] + (w * (reward[i] - q_logged[i]) if w <= tau else 0.0)
    return total / len(reward)


def candidate_feedback(cand_ptr, cand_idx, actions, target, q):
    """Per round: target probability and q̂ of the logged action, Σ_candidates target·q̂."""
    action_prob, q_logged, q_target = [], [], []
    for i, a in enumerate(actions):
        lo, hi = cand_ptr[i], cand_ptr[i + 1]
        j = lo + list(cand_idx[lo:hi]).index(a)
        action_prob.append(target[j])
        q_logged.append(q[j])
        q_target.append(sum(target[k] * q[k] for k in range(lo, hi)))
    return np.array(action_prob), np.array(q_logged), np.array(q_target)


def schedule(t: float, t0: float, t1: float, v0: float, v1: float, shape: str, steps: int):
    """Contract schedule: constant, linear interpolation, or ``steps`` equal stairs."""
    frac = (t - t0) / (t1 - t0)
    if shape == "constant":
        return v0
    if shape == "linear":
        return v0 + (v1 - v0) * frac
    stair = min(int(frac * steps), steps - 1)
    return v0 + (v1 - v0) * stair / max(steps - 1, 1)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def laplace_step(m, a, x, y):
    """One extended-Kalman step of a logistic posterior N(m, A⁻¹) in its textbook form:
    A' = A + p(1−p) x xᵀ, m' = m + A'⁻¹ x (y − p), p = σ(xᵀm)."""
    p = sigmoid(x @ m)
    a_new = a + p * (1 - p) * np.outer(x, x)
    return m + np.linalg.solve(a_new, x * (y - p)), a_new


def laplace_online(xs, ys, gammas, lam, m0):
    """Online Laplace with dense solves: before observation i the statistics (G, h) decay
    by ``gammas[i]``, the mean is re-solved from them, then the step's factor is added."""
    d = len(m0)
    g, h = np.zeros((d, d)), np.zeros(d)
    m = np.asarray(m0, dtype=np.float64).copy()
    for x, y, decay in zip(xs, ys, gammas, strict=True):
        g, h = g * decay, h * decay
        m = np.linalg.solve(lam * np.eye(d) + g, lam * m0 + h)
        p = sigmoid(x @ m)
        w = p * (1 - p)
        g = g + w * np.outer(x, x)
        h = h + x * (w * (x @ m) + y - p)
    return np.linalg.solve(lam * np.eye(d) + g, lam * m0 + h), lam * np.eye(d) + g


def logistic_map(xs, ys, lam, m0, iters=50):
    """Batch MAP of a logistic regression with prior N(m0, I/λ), by Newton's method."""
    d = xs.shape[1]
    m = np.asarray(m0, dtype=np.float64).copy()
    for _ in range(iters):
        p = sigmoid(xs @ m)
        grad = xs.T @ (ys - p) - lam * (m - m0)
        hess = lam * np.eye(d) + (xs * (p * (1 - p))[:, None]).T @ xs
        m = m + np.linalg.solve(hess, grad)
    return m, hess
