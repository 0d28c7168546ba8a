"""Online Laplace (extended Kalman) updates of logistic posteriors, in information form.

An observation ``(x, y)``, ``y`` in [0, 1], linearised at the current mean ``m`` with
``p = σ(xᵀm)`` and ``w = p(1−p)``, adds ``w x xᵀ`` to the precision statistic ``G`` and
``x (w xᵀm + y − p)`` to the information statistic ``h``. The posterior stays
``N(A⁻¹(λ μ0 + h), A⁻¹)`` with ``A = λI + G``, exactly as for the linear families, so
forgetting, fleet deltas and merges, snapshots and refreshes are theirs: each observation
contributes a Gaussian factor, and factors add. The updated mean is the one-step Newton
(EKF) update ``m' = m + A'⁻¹ x (y − p)``; the covariance follows by Sherman–Morrison with
``√w x`` at O(d²).
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import all_finite
from allocator.kernels.linear import linear_scores, sherman_morrison, solve_mean, spd_inverse
from allocator.kernels.link import predictive_probability, sigmoid
from allocator.kernels.shared_linear import (
    decay_joint,
    fold_joint,
    joint_features,
    joint_mean,
    shared_scores,
)


@njit(cache=True, nogil=True)
def update_logistic(
    arm, x, reward, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty
):
    """Fold one binary-valued ``reward`` for ``arm`` with context ``x`` (d,); advance the clock.

    Arrays as in :func:`allocator.kernels.linear.update_linear`; ``mu`` and ``a_inv`` of the
    arm must be its current posterior (every update and refresh leaves them so). With
    forgetting the arm is first decayed to the clock and re-solved (O(d³)), so the update
    linearises at the current mean. ``work`` is (2d+2, d) scratch. Returns False, touching
    nothing, when ``x`` is not finite.
    """
    if not all_finite(x):
        return False
    t = clock[0] + 1
    clock[0] = t
    d = x.shape[0]
    ga, ha, ma, ai = g[arm], h[arm], mu[arm], a_inv[arm]
    decay = 1.0 if gamma == 1.0 else gamma ** (t - t_last[arm])
    if decay != 1.0:
        prec = work[:d]
        for i in range(d):
            ha[i] *= decay
            for k in range(d):
                ga[i, k] *= decay
                prec[i, k] = ga[i, k] + (lam if i == k else 0.0)
        count[arm] *= decay
        spd_inverse(prec, ai, work[d : 2 * d])
        solve_mean(ai, lam, mu0[arm], ha, ma)
    z = 0.0
    for i in range(d):
        z += x[i] * ma[i]
    p = sigmoid(z)
    w = p * (1.0 - p)
    r = w * z + reward - p
    root = np.sqrt(w)
    sx = work[2 * d + 1]
    for i in range(d):
        xi = x[i]
        ha[i] += r * xi
        sx[i] = root * xi
        for k in range(d):
            ga[i, k] += w * xi * x[k]
    count[arm] += 1.0
    t_last[arm] = t
    dirty[arm] = True
    sherman_morrison(ai, sx, work[2 * d])
    solve_mean(ai, lam, mu0[arm], ha, ma)
    return True


@njit(cache=True, nogil=True)
def update_logistic_batch(
    arms, xs, rewards, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty
):
    """Sequential :func:`update_logistic` over ``arms`` (k,), ``xs`` (k, d), ``rewards`` (k,)."""
    for i in range(arms.shape[0]):
        update_logistic(
            arms[i], xs[i], rewards[i], gamma, lam, clock, t_last, g, h, count, mu0, mu,
            a_inv, work, dirty,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def fold_logistic(phi, reward, exact, g, h, mu, a_inv, u):
    """Add the Laplace factor of joint features ``phi`` (D,) with label ``reward``,
    linearised at ``mu`` (D,), to ``g`` (D, D) and ``h`` (D,); with ``exact`` also update
    ``a_inv`` (Sherman–Morrison, O(D²)) and ``mu``. ``phi`` is overwritten; ``u`` (D,)
    scratch."""
    z = 0.0
    for a in range(phi.shape[0]):
        z += phi[a] * mu[a]
    p = sigmoid(z)
    w = p * (1.0 - p)
    fold_joint(phi, w, w * z + reward - p, g, h)
    if exact:
        root = np.sqrt(w)
        for a in range(phi.shape[0]):
            phi[a] *= root
        sherman_morrison(a_inv, phi, u)
        joint_mean(a_inv, h, mu)


@njit(cache=True, nogil=True)
def update_shared_logistic(f, x, reward, gamma, lam, g, h, mu, a_inv, phi, u, clock):
    """Fold one observation with arm features ``f`` (d_arm,) and context ``x`` (d_ctx,).

    ``g`` (D, D), ``h`` (D,) decay by ``gamma`` and gain the Laplace factor of
    ``φ = vec(f ⊗ x)`` linearised at ``mu`` (D,) (:func:`fold_logistic`). Without forgetting
    ``mu`` and ``a_inv`` (D, D) are updated at once; with forgetting they wait for the
    refresh, so updates in between linearise at the refreshed mean. ``phi``, ``u`` (D,)
    scratch; ``lam`` is unused (the signature is the shared linear update's). Returns False,
    touching nothing, when ``x`` is not finite.
    """
    if not all_finite(x):
        return False
    clock[0] += 1
    decay_joint(gamma, g, h)
    joint_features(f, x, phi)
    fold_logistic(phi, reward, gamma == 1.0, g, h, mu, a_inv, u)
    return True


@njit(cache=True, nogil=True)
def update_shared_logistic_batch(
    features, arms, xs, rewards, gamma, lam, g, h, mu, a_inv, phi, u, clock
):
    """Sequential :func:`update_shared_logistic` over ``arms`` (k,), ``xs`` (k, d_ctx)."""
    for i in range(arms.shape[0]):
        update_shared_logistic(
            features[arms[i]], xs[i], rewards[i], gamma, lam, g, h, mu, a_inv, phi, u, clock
        )


@njit(cache=True, nogil=True)
def predict_disjoint(arms, xs, mu, a_inv, m_buf, s_buf, out):
    """Predictive ``P(y = 1)`` of arm ``arms[i]`` (n,) in context ``xs[i]`` (n, d) into
    ``out`` (n,), from posteriors ``mu`` (capacity, d), ``a_inv`` (capacity, d, d);
    ``m_buf``, ``s_buf`` (1,) scratch."""
    for i in range(arms.shape[0]):
        linear_scores(xs[i], arms[i : i + 1], mu, a_inv, 1.0, m_buf, s_buf)
        out[i] = predictive_probability(m_buf[0], s_buf[0] * s_buf[0])


@njit(cache=True, nogil=True)
def predict_shared(arms, xs, features, mu, a_inv, w_buf, p_buf, m_buf, s_buf, out):
    """Predictive ``P(y = 1)`` of ``arms[i]`` in ``xs[i]`` under the shared posterior
    (arguments as in :func:`allocator.kernels.shared_linear.shared_scores`)."""
    for i in range(arms.shape[0]):
        shared_scores(xs[i], arms[i : i + 1], features, mu, a_inv, 1.0, w_buf, p_buf, m_buf, s_buf)
        out[i] = predictive_probability(m_buf[0], s_buf[0] * s_buf[0])
