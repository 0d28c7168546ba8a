"""Off-policy evaluation sums: ridge reward-model moments and solves, CSR look-ups.

The reward model is one ridge regression per arm over ``[1, x]`` (intercept first). Moments
are accumulated per (fold, arm) in one pass, so K-fold cross-fitting costs one pass over the
rows plus ``F + 1`` small solves per arm. Arm models shrink toward a pooled fit rather than
toward zero: an arm without rows gets the pooled fit exactly, a rare arm mostly the pooled fit.
"""

import numpy as np
from numba import njit

from allocator.kernels.linear import cholesky_factor


@njit(cache=True, nogil=True)
def ridge_moments(x, arms, rewards, fold, xtx, xty):
    """Per-(fold, arm) moments of ``[1, x]``.

    Parameters
    ----------
    x : float64 (n, d), d may be 0
    arms : int64 (n,), arm index of each row, in [0, K)
    rewards : float64 (n,)
    fold : int64 (n,), fold of each row, in [0, F); empty: every row in fold 0
    xtx : float64 (F, K, d+1, d+1), output: Σ z zᵀ with z = [1, x]
    xty : float64 (F, K, d+1), output: Σ r z
    """
    xtx[...] = 0.0
    xty[...] = 0.0
    d = x.shape[1]
    folded = fold.shape[0] != 0
    for i in range(x.shape[0]):
        f = fold[i] if folded else 0
        a = arms[i]
        r = rewards[i]
        xtx[f, a, 0, 0] += 1.0
        xty[f, a, 0] += r
        for j in range(d):
            xj = x[i, j]
            xtx[f, a, 0, j + 1] += xj
            xtx[f, a, j + 1, 0] += xj
            xty[f, a, j + 1] += r * xj
            for k in range(d):
                xtx[f, a, j + 1, k + 1] += xj * x[i, k]


@njit(cache=True, nogil=True)
def cholesky_solve(a, b, out, work):
    """Solve ``a out = b`` for symmetric positive-definite ``a`` (p, p); ``work`` (p, p)."""
    p = a.shape[0]
    cholesky_factor(a, work)
    for i in range(p):  # L y = b
        s = b[i]
        for k in range(i):
            s -= work[i, k] * out[k]
        out[i] = s / work[i, i]
    for i in range(p - 1, -1, -1):  # Lᵀ out = y
        s = out[i]
        for k in range(i + 1, p):
            s -= work[k, i] * out[k]
        out[i] = s / work[i, i]


@njit(cache=True, nogil=True)
def ridge_coefficients(xtx, xty, l2, coef, pooled):
    """Pooled and per-arm ridge fits of ``M`` models from their moments.

    The pooled fit of model ``m`` solves ``(Σ_a G_a + l2·D) β = Σ_a h_a`` with ``D`` the
    identity without its intercept entry (the intercept is not penalised); arm ``a`` then
    solves ``(G_a + l2·I) θ_a = h_a + l2·β``, i.e. ridge shrinkage toward the pooled fit.

    Parameters
    ----------
    xtx : float64 (M, K, p, p); xty : float64 (M, K, p); every model has at least one row
    l2 : float > 0
    coef : float64 (M, K, p), output; pooled : float64 (M, p), output
    """
    n_models, n_arms, p = xty.shape
    a = np.empty((p, p))
    b = np.empty(p)
    work = np.zeros((p, p))
    for m in range(n_models):
        a[...] = 0.0
        b[...] = 0.0
        for k in range(n_arms):
            for i in range(p):
                b[i] += xty[m, k, i]
                for j in range(p):
                    a[i, j] += xtx[m, k, i, j]
        for i in range(1, p):
            a[i, i] += l2
        cholesky_solve(a, b, pooled[m], work)
        for k in range(n_arms):
            for i in range(p):
                b[i] = xty[m, k, i] + l2 * pooled[m, i]
                for j in range(p):
                    a[i, j] = xtx[m, k, i, j]
                a[i, i] += l2
            cholesky_solve(a, b, coef[m, k], work)


@njit(cache=True, nogil=True)
def predict_csr(x, cand_ptr, cand_idx, model_of_row, coef, out):
    """Reward-model value of every candidate of every row.

    Parameters
    ----------
    x : float64 (n, d); cand_ptr : int64 (n+1,); cand_idx : int64 (nnz,)
    model_of_row : int64 (n,), which of the ``M`` models serves row ``i``
    coef : float64 (M, K, d+1), intercept first
    out : float64 (nnz,), output
    """
    d = x.shape[1]
    for i in range(cand_ptr.shape[0] - 1):
        m = model_of_row[i]
        for j in range(cand_ptr[i], cand_ptr[i + 1]):
            a = cand_idx[j]
            v = coef[m, a, 0]
            for k in range(d):
                v += coef[m, a, k + 1] * x[i, k]
            out[j] = v


@njit(cache=True, nogil=True)
def logged_positions(cand_ptr, cand_idx, actions, out):
    """Flat position of each row's logged action among its candidates.

    Parameters
    ----------
    cand_ptr : int64 (n+1,); cand_idx : int64 (nnz,); actions : int64 (n,)
    out : int64 (n,), output: ``cand_idx[out[i]] == actions[i]``

    Returns
    -------
    int: -1, or the first row whose logged action is not among its candidates.
    """
    for i in range(actions.shape[0]):
        out[i] = -1
        for j in range(cand_ptr[i], cand_ptr[i + 1]):
            if cand_idx[j] == actions[i]:
                out[i] = j
                break
        if out[i] < 0:
            return i
    return -1


@njit(cache=True, nogil=True)
def segment_sums(cand_ptr, values, out):
    """``out[i] = Σ values[cand_ptr[i]:cand_ptr[i+1]]``; values (nnz,), out (n,)."""
    for i in range(cand_ptr.shape[0] - 1):
        s = 0.0
        for j in range(cand_ptr[i], cand_ptr[i + 1]):
            s += values[j]
        out[i] = s


@njit(cache=True, nogil=True)
def segment_dots(cand_ptr, a, b, out):
    """``out[i] = Σ a[j]·b[j]`` over ``j`` in ``cand_ptr[i]:cand_ptr[i+1]``; a, b (nnz,), out
    (n,): a target's mean of a per-candidate value, without a per-candidate temporary."""
    for i in range(cand_ptr.shape[0] - 1):
        s = 0.0
        for j in range(cand_ptr[i], cand_ptr[i + 1]):
            s += a[j] * b[j]
        out[i] = s


@njit(cache=True, nogil=True)
def dr_round_terms(ptr, target, q, pos, rewards01, weights, logp, w_max, clip, terms, bounds):
    """Per-round DR terms ``Σ π q̂ + w·(r − q̂(a))`` and the bounds no term can leave, in
    one pass and without a per-candidate temporary (a log of 10^8 rounds has ~10^9
    candidates).

    Parameters
    ----------
    ptr : int64 (n+1,); target, q : float64 (nnz,) target probability and model value of
        every candidate; pos : int64 (n,) flat position of each logged action
    rewards01, weights : float64 (n,) scaled reward and importance weight per round
    logp : float64 (nnz,) logging probability of every candidate, or (0,) when the log
        kept only the chosen arm's: then a candidate the target can choose weighs ``w_max``
    clip : float, cap on a candidate's weight (``inf``: none)
    terms : float64 (n,) output; bounds : float64 (2,) output, the smallest and largest
        value a round's term could take whatever its action and reward
    """
    low = np.inf
    high = -np.inf
    for i in range(ptr.shape[0] - 1):
        s = 0.0
        for j in range(ptr[i], ptr[i + 1]):
            s += target[j] * q[j]
        terms[i] = s + weights[i] * (rewards01[i] - q[pos[i]])
        down = -np.inf
        up = -np.inf
        for j in range(ptr[i], ptr[i + 1]):
            w = w_max
            if logp.shape[0] != 0:
                w = target[j] / (logp[j] if logp[j] > 0.0 else 1.0)
            w = min(w, clip) if target[j] > 0.0 else 0.0
            down = max(down, w * q[j])
            up = max(up, w * (1.0 - q[j]))
        low = min(low, s - down)
        high = max(high, s + up)
    bounds[0] = low
    bounds[1] = high


@njit(cache=True, nogil=True)
def supported_values(ptr, target, q, s_out, q_low, q_high):
    """Per round, ``Σ π q̂`` and the smallest and largest ``q̂`` of the candidates the
    target can choose: what :func:`dr_round_terms`' bounds are made of when every
    candidate weighs one common ``w_max``, known only once the whole log is walked
    (``s − w_max·q_high`` and ``s + w_max·(1 − q_low)``, the same roundings).

    Parameters
    ----------
    ptr : int64 (n+1,); target, q : float64 (nnz,)
    s_out, q_low, q_high : float64 (n,) outputs
    """
    for i in range(ptr.shape[0] - 1):
        s = 0.0
        lo = np.inf
        hi = -np.inf
        for j in range(ptr[i], ptr[i + 1]):
            s += target[j] * q[j]
            if target[j] > 0.0:
                lo = min(lo, q[j])
                hi = max(hi, q[j])
        s_out[i] = s
        q_low[i] = lo
        q_high[i] = hi


#: weak pull of the pooled logistic intercept toward 0 (a rate of 1/2): keeps it finite
#: when every reward is 0 (or 1) without moving a fitted rate by more than ~0.1 / n_rewards
INTERCEPT_L2 = 0.1


@njit(cache=True, nogil=True)
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(cache=True, nogil=True)
def logistic_fit_counts(rows, ones, l2, max_iter, tol, coef):
    """:func:`logistic_fit` without features (``d = 0``) from each arm's row count and
    reward sum: every row of an arm has the same prediction, so the Newton steps read
    sums (O(K) an iteration instead of O(n)); the same fit, up to rounding.

    Parameters
    ----------
    rows, ones : float64 (K,), rows and summed rewards (in [0, 1]) per arm
    l2, max_iter, tol : as :func:`logistic_fit`
    coef : float64 (K,), output, each arm's intercept
    """
    n_all = 0.0
    y_all = 0.0
    for a in range(rows.shape[0]):
        n_all += rows[a]
        y_all += ones[a]
    pooled = 0.0
    for _ in range(max_iter):
        mu = _sigmoid(pooled)
        step = (n_all * mu - y_all + INTERCEPT_L2 * pooled) / (
            n_all * mu * (1.0 - mu) + INTERCEPT_L2
        )
        pooled -= step
        if abs(step) < tol:
            break
    coef[:] = pooled
    for a in range(rows.shape[0]):
        for _ in range(max_iter):
            mu = _sigmoid(coef[a])
            g = rows[a] * mu - ones[a] + l2 * (coef[a] - pooled)
            step = g / (rows[a] * mu * (1.0 - mu) + l2)
            coef[a] -= step
            if abs(step) < tol:
                break


@njit(cache=True, nogil=True)
def logistic_fit(x, arms, rewards, include, l2, max_iter, tol, coef, pooled):
    """Pooled and per-arm L2-penalised logistic regressions over ``[1, x]`` by Newton steps.

    The pooled fit penalises every weight (the intercept only weakly); arm ``a`` then penalises
    ``l2·|θ_a − β|²`` (shrinkage toward the pooled fit, as the ridge model does), so an arm
    without rows gets the pooled fit exactly. Rewards in [0, 1] (fractional ones are soft
    labels); predictions ``σ(θ_a·z)`` stay inside (0, 1) whatever the features.

    Parameters
    ----------
    x : float64 (n, d); arms : int64 (n,) in [0, K); rewards : float64 (n,) in [0, 1]
    include : bool (n,), the rows this model is fitted on (at least one); empty: all
    l2 : float > 0; max_iter : int; tol : float, stop when no coefficient moves more
    coef : float64 (K, p), output, p = d + 1; pooled : float64 (p,), output
    """
    n, d = x.shape
    n_arms, p = coef.shape
    every = include.shape[0] == 0
    z = np.empty(p)
    g = np.empty(p)
    h = np.empty((p, p))
    step = np.empty(p)
    work = np.zeros((p, p))
    pooled[:] = 0.0
    for _ in range(max_iter):
        g[:] = 0.0
        h[...] = 0.0
        for i in range(n):
            if not every and not include[i]:
                continue
            z[0] = 1.0
            for j in range(d):
                z[j + 1] = x[i, j]
            eta = 0.0
            for j in range(p):
                eta += pooled[j] * z[j]
            mu = _sigmoid(eta)
            s = mu * (1.0 - mu)
            e = mu - rewards[i]
            for j in range(p):  # s·z_j·z_k is (s·z_j)·z_k: hoisting s·z_j is exact
                g[j] += e * z[j]
                sz = s * z[j]
                for k in range(j + 1):  # the solve reads the lower triangle only
                    h[j, k] += sz * z[k]
        for j in range(p):
            pen = l2 if j > 0 else INTERCEPT_L2
            g[j] += pen * pooled[j]
            h[j, j] += pen
        cholesky_solve(h, g, step, work)
        moved = 0.0
        for j in range(p):
            pooled[j] -= step[j]
            moved = max(moved, abs(step[j]))
        if moved < tol:
            break
    gk = np.empty((n_arms, p))
    hk = np.empty((n_arms, p, p))
    for a in range(n_arms):
        coef[a, :] = pooled
    for _ in range(max_iter):
        gk[...] = 0.0
        hk[...] = 0.0
        for i in range(n):
            if not every and not include[i]:
                continue
            a = arms[i]
            z[0] = 1.0
            for j in range(d):
                z[j + 1] = x[i, j]
            eta = 0.0
            for j in range(p):
                eta += coef[a, j] * z[j]
            mu = _sigmoid(eta)
            s = mu * (1.0 - mu)
            e = mu - rewards[i]
            for j in range(p):
                gk[a, j] += e * z[j]
                sz = s * z[j]
                for k in range(j + 1):
                    hk[a, j, k] += sz * z[k]
        moved = 0.0
        for a in range(n_arms):
            for j in range(p):
                gk[a, j] += l2 * (coef[a, j] - pooled[j])
                hk[a, j, j] += l2
            cholesky_solve(hk[a], gk[a], step, work)
            for j in range(p):
                coef[a, j] -= step[j]
                moved = max(moved, abs(step[j]))
        if moved < tol:
            break
