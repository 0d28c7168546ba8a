"""Disjoint linear Gaussian posteriors: one ridge model per arm, sampled in score space.

Per arm we keep discounted ``G = Σ w x xᵀ`` and ``h = Σ w r x`` (lazy forgetting as in
:mod:`allocator.kernels.beta`). The refreshed posterior is ``θ_a ~ N(μ_a, v² A_a⁻¹)`` with
``A_a = λI + G_a`` and ``μ_a = A_a⁻¹(λ μ0_a + h_a)``. A request only needs the score
``x·θ_a ~ N(x·μ_a, v² xᵀA_a⁻¹x)``, so deciding costs O(C·d²) plus the bank, never a
d-dimensional draw per arm.
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import (
    OK,
    RULE_GREEDY,
    RULE_THOMPSON,
    all_finite,
    argmax_onehot,
    draw_index,
    gauss_win_shares,
    mix_uniform,
)
from allocator.kernels.link import apply_link
from allocator.kernels.pipeline import check_request, check_requests, finish

#: normals a refresh redraws in the score bank: per update folded in since the last
#: refresh, and at most (a refresh every 64 updates, the default, redraws the most)
Z_CELLS_PER_UPDATE = 1 << 10
Z_CELLS_PER_REFRESH = 1 << 16


@njit(cache=True, nogil=True)
def cholesky_factor(a, work):
    """Lower Cholesky factor of a symmetric positive-definite (d, d) ``a`` into ``work``.

    A non-positive pivot (round-off on a near-singular matrix) is floored, not raised.
    """
    d = a.shape[0]
    for i in range(d):
        for j in range(i + 1):
            s = a[i, j]
            for k in range(j):
                s -= work[i, k] * work[j, k]
            if i == j:
                work[i, i] = np.sqrt(s) if s > 1e-300 else 1e-150
            else:
                work[i, j] = s / work[j, j]


@njit(cache=True, nogil=True)
def spd_inverse(a, out, work):
    """Inverse of a symmetric positive-definite (d, d) matrix through its Cholesky factor.

    ``work`` (d, d) receives the lower factor; ``out`` (d, d) the inverse.
    """
    d = a.shape[0]
    cholesky_factor(a, work)
    for c in range(d):  # solve L Lᵀ out[:, c] = e_c
        for i in range(d):
            s = 1.0 if i == c else 0.0
            for k in range(i):
                s -= work[i, k] * out[k, c]
            out[i, c] = s / work[i, i]
        for i in range(d - 1, -1, -1):
            s = out[i, c]
            for k in range(i + 1, d):
                s -= work[k, i] * out[k, c]
            out[i, c] = s / work[i, i]


@njit(cache=True, nogil=True)
def spd_inverse_symmetric(a, out, work):
    """Inverse of a symmetric positive-definite (d, d) ``a`` as ``L⁻ᵀL⁻¹``, exactly
    symmetric: ~d³/2 multiply-adds and d divisions, against ~d³ and 2d² for
    :func:`spd_inverse`'s column-by-column solves (2.4× fewer at d = 16).

    ``a`` is overwritten with ``L⁻¹`` (lower triangle); ``work`` (d, d) receives the
    factor ``L``; ``out`` (d, d) the inverse.
    """
    d = a.shape[0]
    cholesky_factor(a, work)
    for i in range(d):
        inv_ii = 1.0 / work[i, i]
        a[i, i] = inv_ii
        for j in range(i):
            s = 0.0
            for k in range(j, i):
                s += work[i, k] * a[k, j]
            a[i, j] = -s * inv_ii
    for i in range(d):
        for j in range(i + 1):
            s = 0.0
            for k in range(i, d):
                s += a[k, i] * a[k, j]
            out[i, j] = s
            out[j, i] = s


@njit(cache=True, nogil=True)
def sherman_morrison(a_inv, x, u):
    """``a_inv ← (A + x xᵀ)⁻¹`` in place, O(d²); ``u`` (d,) scratch."""
    d = x.shape[0]
    denom = 1.0
    for i in range(d):
        s = 0.0
        for k in range(d):
            s += a_inv[i, k] * x[k]
        u[i] = s
        denom += x[i] * s
    for i in range(d):
        ui = u[i] / denom
        for k in range(d):
            a_inv[i, k] -= ui * u[k]


@njit(cache=True, nogil=True)
def solve_mean(a_inv, lam, mu0, h, mu):
    """``mu = a_inv (λ μ0 + h)``."""
    d = h.shape[0]
    for i in range(d):
        s = 0.0
        for k in range(d):
            s += a_inv[i, k] * (lam * mu0[k] + h[k])
        mu[i] = s


@njit(cache=True, nogil=True)
def update_linear(
    arm, x, reward, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty
):
    """Rank-1 update of arm ``arm`` with context ``x`` (d,); advance ``clock[0]``.

    ``g`` (capacity, d, d), ``h`` (capacity, d), ``count`` (capacity,) discounted counts.
    The arm's posterior (``mu``, ``a_inv``) is brought up to date at once: Sherman–Morrison
    without forgetting, a Cholesky re-solve with it. The arm
    stays marked dirty so the next refresh re-solves it exactly (no drift accumulates).
    ``work`` is (2d+1, d) scratch: precision, Cholesky factor, and one vector.
    Returns False, touching nothing, when ``x`` is not finite.
    """
    if not all_finite(x):
        return False
    t = clock[0] + 1
    clock[0] = t
    d = x.shape[0]
    ga = g[arm]
    ha = h[arm]
    w = 1.0 if gamma == 1.0 else gamma ** (t - t_last[arm])
    for i in range(d):
        xi = x[i]
        for k in range(d):
            ga[i, k] = w * ga[i, k] + xi * x[k]
        ha[i] = w * ha[i] + reward * xi
    count[arm] = w * count[arm] + 1.0
    t_last[arm] = t
    dirty[arm] = True
    if w == 1.0:
        sherman_morrison(a_inv[arm], x, work[2 * d])
    else:
        prec = work[:d]
        for i in range(d):
            for k in range(d):
                prec[i, k] = ga[i, k] + (lam if i == k else 0.0)
        spd_inverse(prec, a_inv[arm], work[d : 2 * d])
    solve_mean(a_inv[arm], lam, mu0[arm], ha, mu[arm])
    return True


@njit(cache=True, nogil=True)
def refresh_linear(arms, gamma, lam, clock, t_last, g, h, mu0, mu, a_inv, work):
    """Re-solve the posteriors of ``arms`` (k,) from their statistics as of ``clock[0]``:
    ``A = w·G + λI`` and ``b = w·h`` with ``w = γ^(clock − t_last)`` (the forgetting not
    yet applied), ``a_inv = A⁻¹`` (:func:`spd_inverse_symmetric`), ``mu = A⁻¹(λ μ0 + b)``.

    The policy's refresh and a replay walk's both run this, so they agree to the bit.
    Arrays as :func:`update_linear`; ``work`` (>= 2d+1, d) scratch.
    """
    d = mu.shape[1]
    prec = work[:d]
    b = work[2 * d]
    for j in range(arms.shape[0]):
        a = arms[j]
        w = 1.0 if gamma == 1.0 else gamma ** float(clock[0] - t_last[a])
        for i in range(d):
            for k in range(d):
                prec[i, k] = w * g[a, i, k] + (lam if i == k else 0.0)
            b[i] = w * h[a, i]
        spd_inverse_symmetric(prec, a_inv[a], work[d : 2 * d])
        solve_mean(a_inv[a], lam, mu0[a], b, mu[a])


@njit(cache=True, nogil=True)
def roll_normals(rng, z, slots, pending, cursor):
    """Redraw the next window of the score bank ``z`` (rows, M) float32 in its first
    ``slots`` rows: :data:`Z_CELLS_PER_UPDATE` normals per update of the ``pending`` ones
    (at least one column, at most :data:`Z_CELLS_PER_REFRESH` normals), from column
    ``cursor[0]`` (advanced, wrapping to 0 at the end), drawn row by row from the numpy
    ``Generator`` ``rng`` (what ``rng.standard_normal((slots, width))`` draws)."""
    m_rows = z.shape[1]
    cells = min(Z_CELLS_PER_REFRESH, Z_CELLS_PER_UPDATE * pending)
    step = max(1, min(m_rows, cells // max(slots, 1)))
    lo = cursor[0]
    hi = min(m_rows, lo + step)
    for s in range(slots):
        for m in range(lo, hi):
            z[s, m] = rng.standard_normal()
    cursor[0] = 0 if hi == m_rows else hi


@njit(cache=True, nogil=True)
def update_linear_batch(
    arms, xs, rewards, gamma, lam, clock, t_last, g, h, count, mu0, mu, a_inv, work, dirty
):
    """Sequential :func:`update_linear` over ``arms`` (k,), ``xs`` (k, d), ``rewards`` (k,)."""
    for i in range(arms.shape[0]):
        update_linear(
            arms[i], xs[i], rewards[i], gamma, lam, clock, t_last, g, h, count, mu0, mu,
            a_inv, work, dirty,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def linear_scores(x, cand, mu, a_inv, v, mean_out, sd_out):
    """Per-candidate score mean ``x·μ_a`` and sd ``v·sqrt(xᵀA_a⁻¹x)``.

    The rows of ``A_a⁻¹x`` are summed four at a time: each sum still runs over ``k`` in
    order (the same bits), but four independent chains keep the adder busy where one
    waited on its own latency (1.4× faster at d = 16).
    """
    d = x.shape[0]
    for j in range(cand.shape[0]):
        a = cand[j]
        m = 0.0
        q = 0.0
        i = 0
        while i + 4 <= d:
            r0 = 0.0
            r1 = 0.0
            r2 = 0.0
            r3 = 0.0
            for k in range(d):
                xk = x[k]
                r0 += a_inv[a, i, k] * xk
                r1 += a_inv[a, i + 1, k] * xk
                r2 += a_inv[a, i + 2, k] * xk
                r3 += a_inv[a, i + 3, k] * xk
            m += x[i] * mu[a, i]
            q += x[i] * r0
            m += x[i + 1] * mu[a, i + 1]
            q += x[i + 1] * r1
            m += x[i + 2] * mu[a, i + 2]
            q += x[i + 2] * r2
            m += x[i + 3] * mu[a, i + 3]
            q += x[i + 3] * r3
            i += 4
        while i < d:
            m += x[i] * mu[a, i]
            r = 0.0
            for k in range(d):
                r += a_inv[a, i, k] * x[k]
            q += x[i] * r
            i += 1
        mean_out[j] = m
        sd_out[j] = v * np.sqrt(q) if q > 0.0 else 0.0


@njit(cache=True, nogil=True, inline="always")
def scores_to_probs(mean, sd, n, z, rule, ucb_alpha, best, arg, p):
    """Turn per-candidate score mean/sd into base choice probabilities ``p[:n]``."""
    if rule == RULE_THOMPSON:
        gauss_win_shares(mean, sd, z, n, best, arg, p)
    else:
        for j in range(n):
            best[j] = mean[j] if rule == RULE_GREEDY else mean[j] + ucb_alpha * sd[j]
        argmax_onehot(best, n, p)


@njit(cache=True, nogil=True, inline="always")
def linear_base(cand, x, mu, a_inv, v, z, rule, ucb_alpha, best, arg, mean_buf, sd_buf, p):
    """Base probabilities ``p[:n]`` of one request's ``n`` candidates ``cand`` with context
    ``x`` (d,): score mean and sd into ``mean_buf``/``sd_buf``, then the rule."""
    linear_scores(x, cand, mu, a_inv, v, mean_buf, sd_buf)
    scores_to_probs(mean_buf, sd_buf, cand.shape[0], z, rule, ucb_alpha, best, arg, p)


@njit(cache=True, nogil=True, inline="always")
def decide_linear_one(
    cand, x, draw, active, pos_of_arm, err, mu, a_inv, v, z, rule, ucb_alpha, eps,
    rng_state, best, arg, mean_buf, sd_buf, p_out,
):  # fmt: skip
    """:func:`decide_linear` for one request without contracts, for loops that call it
    once per request (replay walks): half its arguments (passing ~40 arrays costs
    microseconds per call) and no allocation. Same checks, probabilities and draw as a
    batch of one; argument names are :func:`decide_linear`'s (``cand`` (C,), ``x``
    (d,)). Returns ``(code, chosen position)`` (position 0 without ``draw``). Inlined at
    numba's level, as are the steps it calls that are not leaves: a compiled call would
    count a reference on each of its arrays, in and out, every request.
    """
    code = check_request(cand, x, active, pos_of_arm, z.shape[0], err)
    if code != OK:
        return code, 0
    n = cand.shape[0]
    linear_base(cand, x, mu, a_inv, v, z, rule, ucb_alpha, best, arg, mean_buf, sd_buf, p_out)
    mix_uniform(p_out, n, eps)
    return OK, draw_index(p_out, n, rng_state) if draw else 0


@njit(cache=True, nogil=True)
def decide_linear(
    cand_ptr, cand_idx, xs, times, codes, draw,
    active, mu, a_inv, v, link, z, rule, ucb_alpha, eps,
    def_i, def_f, allowed, eta, backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i,
    ring, member, before,
    rng_state, pos_of_arm, best, arg, mean_buf, sd_buf, p_out, chosen, forced, adjusted, err,
):  # fmt: skip
    """Decide a CSR batch of requests with contexts ``xs`` (R, d) through the pipeline.

    ``mu`` (capacity, d), ``a_inv`` (capacity, d, d), ``z`` (slots, M) standard normals;
    ``link`` (``kernels.link``) maps score means to the expected rewards contracts weigh;
    the other arguments are those of :func:`allocator.kernels.per_arm.decide_per_arm`.
    Returns ``OK`` or a negative error code (``err`` = request, position), nothing changed.
    """
    code = check_requests(cand_ptr, cand_idx, xs, active, pos_of_arm, z.shape[0], err)
    if code != OK:
        return code
    for r in range(cand_ptr.shape[0] - 1):
        lo = cand_ptr[r]
        c = cand_idx[lo : cand_ptr[r + 1]]
        n = c.shape[0]
        p = p_out[lo : lo + n]
        linear_base(c, xs[r], mu, a_inv, v, z, rule, ucb_alpha, best, arg, mean_buf, sd_buf, p)
        apply_link(mean_buf, sd_buf, v, n, link)
        chosen[r], forced[r], adjusted[r] = finish(
            p, n, c, mean_buf, eps, times[r], codes[r], draw, def_i, def_f, allowed, eta,
            backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i, ring, member, before,
            rng_state,
        )  # fmt: skip
    return OK
