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
from allocator.kernels.ope import cholesky_solve
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
    _step(arm, x, reward, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty)
    return True


@njit(cache=True, nogil=True)
def _decay_arm(arm, gamma, t, t_last, g, h, count):
    """Bring the arm's statistics from ``t_last[arm]`` to tick ``t``; whether they changed."""
    if gamma == 1.0 or t_last[arm] == t:
        t_last[arm] = t
        return False
    decay = gamma ** (t - t_last[arm])
    g[arm] *= decay
    h[arm] *= decay
    count[arm] *= decay
    t_last[arm] = t
    return True


@njit(cache=True, nogil=True)
def _step(arm, x, reward, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty):
    """:func:`update_logistic` on a finite ``x``; returns the logit ``xᵀm`` it linearised at."""
    t = clock[0] + 1
    clock[0] = t
    d = x.shape[0]
    ga, ha, ma, ai = g[arm], h[arm], mu[arm], a_inv[arm]
    if _decay_arm(arm, gamma, t, t_last, g, h, count):
        prec = work[:d]
        for i in range(d):
            for k in range(d):
                prec[i, k] = ga[i, k] + (lam if i == k else 0.0)
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
    dirty[arm] = True
    sherman_morrison(ai, sx, work[2 * d])
    solve_mean(ai, lam, mu0[arm], ha, ma)
    return z


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
def update_logistic_buffered_batch(
    arms, xs, rewards, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty,
    buf_x, buf_y, buf_z, buf_t, buf_n,
):  # fmt: skip
    """:func:`update_logistic_batch` that also records each observation in its arm's ring
    buffer: ``buf_x`` (capacity, B, d), ``buf_y``, ``buf_z`` (the logit its factor was
    linearised at) and ``buf_t`` (its tick), all (capacity, B); ``buf_n`` (capacity,) counts
    what each arm ever recorded (its next slot is ``buf_n % B``). An overwritten
    observation's factor simply stays in ``g``, ``h`` as last linearised."""
    size = buf_y.shape[1]
    for i in range(arms.shape[0]):
        x = xs[i]
        if not all_finite(x):
            continue
        a = arms[i]
        z = _step(a, x, rewards[i], gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv,
                  work, dirty)  # fmt: skip
        slot = buf_n[a] % size
        buf_x[a, slot] = x
        buf_y[a, slot] = rewards[i]
        buf_z[a, slot] = z
        buf_t[a, slot] = clock[0]
        buf_n[a] += 1


@njit(cache=True, nogil=True)
def _buffer_terms(xs, ys, ws, n, m, derivs, grad, hess):
    """``Σ ω (softplus(z) − y z)`` over the buffer at ``m`` (``ws``: forgetting weights ω);
    with ``derivs`` also add ``Σ ω (y − p) x`` to ``grad`` and ``Σ ω p(1−p) x xᵀ`` to
    ``hess``."""
    d = m.shape[0]
    loss = 0.0
    for i in range(n):
        x = xs[i]
        z = 0.0
        for k in range(d):
            z += x[k] * m[k]
        p = sigmoid(z)
        loss += ws[i] * (max(z, 0.0) + np.log1p(np.exp(-abs(z))) - ys[i] * z)
        if not derivs:
            continue
        c = ws[i] * (ys[i] - p)
        wp = ws[i] * p * (1.0 - p)
        for j in range(d):
            grad[j] += c * x[j]
            for k in range(j + 1):
                hess[j, k] += wp * x[j] * x[k]
    if derivs:
        for j in range(d):
            for k in range(j):
                hess[k, j] = hess[j, k]
    return loss


@njit(cache=True, nogil=True)
def refit_logistic(
    arms, gamma, lam, clock, t_last, g, h, count, mu0, mu, buf_x, buf_y, buf_z, buf_t, buf_n,
    max_steps, ws, mats, vecs,
):  # fmt: skip
    """Replace the online Laplace factors of each arm's buffered observations by exact ones:
    Newton steps (halved until the objective falls) from ``mu[arm]`` to the MAP of the
    buffer's exact likelihood times the rest of the posterior, then every buffered factor
    relinearised at that MAP (``buf_z``) and folded back into ``g``, ``h``.

    The rest is ``(λI + G − Σ ω w_i x_i x_iᵀ, λμ0 + h − Σ ω r_i x_i)`` with ``w_i``, ``r_i`` the
    factor of observation ``i`` as last linearised and ``ω`` its forgetting weight: the
    prior, observations that left the buffer, and merged evidence. The arm is decayed to the
    clock first. ``mu`` and ``a_inv`` are left for the caller's re-solve (the arms stay
    dirty); at the MAP that re-solve gives the MAP back. Arrays as in
    :func:`update_logistic_buffered_batch`; ``ws`` (B,), ``mats`` (3, d, d), ``vecs`` (5, d)
    scratch.
    """
    d = g.shape[1]
    size = buf_y.shape[1]
    prec, hess, chol = mats[0], mats[1], mats[2]
    b, m, grad, trial, step = vecs[0], vecs[1], vecs[2], vecs[3], vecs[4]
    for a in arms:
        n = min(buf_n[a], size)
        if n == 0:
            continue
        _decay_arm(a, gamma, clock[0], t_last, g, h, count)
        xs, ys, zs = buf_x[a], buf_y[a], buf_z[a]
        for i in range(n):
            ws[i] = 1.0 if gamma == 1.0 else gamma ** (clock[0] - buf_t[a, i])
        for j in range(d):
            b[j] = lam * mu0[a, j] + h[a, j]
            m[j] = mu[a, j]
            for k in range(d):
                prec[j, k] = g[a, j, k] + (lam if j == k else 0.0)
        _add_factors(xs, ys, zs, ws, n, -1.0, prec, b)  # the rest of the posterior
        for _ in range(max_steps):
            f0 = _objective(prec, b, m, xs, ys, ws, n, True, grad, hess)
            cholesky_solve(hess, grad, step, chol)
            if np.abs(step).max() < 1e-10:
                break
            scale = 1.0
            while scale > 1e-6:
                for j in range(d):
                    trial[j] = m[j] + scale * step[j]
                if _objective(prec, b, trial, xs, ys, ws, n, False, grad, hess) <= f0:
                    break
                scale *= 0.5
            if scale <= 1e-6:
                break
            moved = 0.0
            for j in range(d):
                moved = max(moved, abs(trial[j] - m[j]))
                m[j] = trial[j]
            if moved < 1e-10:
                break
        for j in range(d):
            h[a, j] = b[j] - lam * mu0[a, j]
            for k in range(d):
                g[a, j, k] = prec[j, k] - (lam if j == k else 0.0)
        for i in range(n):  # relinearise at the MAP
            z = 0.0
            for j in range(d):
                z += xs[i, j] * m[j]
            zs[i] = z
        _add_factors(xs, ys, zs, ws, n, 1.0, g[a], h[a])


@njit(cache=True, nogil=True)
def _add_factors(xs, ys, zs, ws, n, sign, mat, vec):
    """Add ``sign`` times the Laplace factors of the first ``n`` buffered observations,
    linearised at logits ``zs``, to a symmetric ``mat`` (d, d) and ``vec`` (d,)."""
    d = vec.shape[0]
    for i in range(n):
        p = sigmoid(zs[i])
        w = sign * ws[i] * p * (1.0 - p)
        r = sign * ws[i] * (p * (1.0 - p) * zs[i] + ys[i] - p)
        x = xs[i]
        for j in range(d):
            vec[j] += r * x[j]
            wx = w * x[j]
            for k in range(j + 1):
                mat[j, k] += wx * x[k]
    for j in range(d):
        for k in range(j):
            mat[k, j] = mat[j, k]


@njit(cache=True, nogil=True)
def _objective(prec, b, m, xs, ys, ws, n, derivs, grad, hess):
    """Negative log posterior at ``m`` (up to a constant); with ``derivs`` its gradient's
    negative ``b − P m + Σ ω (y − p) x`` into ``grad`` and its Hessian into ``hess``."""
    d = m.shape[0]
    f = 0.0
    for j in range(d):
        pm = 0.0
        for k in range(d):
            pm += prec[j, k] * m[k]
            if derivs:
                hess[j, k] = prec[j, k]
        f += 0.5 * m[j] * pm - b[j] * m[j]
        if derivs:
            grad[j] = b[j] - pm
    return f + _buffer_terms(xs, ys, ws, n, m, derivs, grad, hess)


@njit(cache=True, nogil=True)
def fold_logistic(phi, reward, exact, g, h, mu, a_inv, u, offset):
    """Add the Laplace factor of joint features ``phi`` (D,) with label ``reward``,
    linearised at ``mu`` (D,), to ``g`` (D, D) and ``h`` (D,); with ``exact`` also update
    ``a_inv`` (Sherman–Morrison, O(D²)) and ``mu``. ``phi`` is overwritten; ``u`` (D,)
    scratch.

    ``offset`` is a fixed logit added in the link, ``P(y = 1) = σ(offset + φᵀθ)``: the
    weights' prior stays centred at 0 while every candidate's prior logit is centred at
    ``offset``. The factor in ``θ`` is then ``w φφᵀ`` and ``φ (w φᵀm + y − p)`` with
    ``p = σ(offset + φᵀm)``: the offset moves ``p`` and ``w``, not the linearisation."""
    z = 0.0
    for a in range(phi.shape[0]):
        z += phi[a] * mu[a]
    p = sigmoid(z + offset)
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
    fold_logistic(phi, reward, gamma == 1.0, g, h, mu, a_inv, u, 0.0)
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
