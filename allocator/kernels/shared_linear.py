"""One linear model over joint features ``φ(x, a) = vec(f_a ⊗ x)`` for large catalogues.

Arms carry feature vectors ``f_a`` (d_arm,), so a catalogue of 10^6 merchants costs
O(10^6·d_arm) memory plus one (D, D) precision, D = d_arm·d_ctx. Per request the context is
folded once into ``w = M x`` (d_arm,) and ``P = (I⊗x)ᵀ A⁻¹ (I⊗x)`` (d_arm, d_arm), so each
candidate's score mean ``f·w`` and variance ``v² fᵀPf`` cost O(d_arm²). Thompson
sampling draws either each candidate's score from its own marginal (``joint = False``: the
shared weights' cross-arm correlation is ignored, so many near-identical candidates each
get an independent chance to look best and a crowd of them wins too often), or one folded
weight vector ``w̃ ~ N(w, v²P)`` per bank row that scores every candidate (``joint =
True``: a sample of the model, as Thompson sampling means it). Either way a candidate's
propensity is its share of the bank rows it wins, exact for the procedure.
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import (
    ERR_LOOKUP,
    ERR_NONFINITE,
    OK,
    RULE_THOMPSON,
    all_finite,
    draw_index,
    mix_uniform,
    tally_wins,
)
from allocator.kernels.id_query import found_all
from allocator.kernels.linear import scores_to_probs, sherman_morrison
from allocator.kernels.link import apply_link
from allocator.kernels.pipeline import check_request, check_requests, finish, prefetch_request


@njit(cache=True, nogil=True)
def joint_features(f, x, phi):
    """``phi`` (D,) ← vec(f ⊗ x) for arm features ``f`` (d_arm,) and context ``x`` (d_ctx,)."""
    dc = x.shape[0]
    for i in range(f.shape[0]):
        for q in range(dc):
            phi[i * dc + q] = f[i] * x[q]


@njit(cache=True, nogil=True)
def decay_joint(gamma, g, h):
    """Forget one tick: ``g`` (D, D) and ``h`` (D,) times ``gamma`` (nothing when 1)."""
    if gamma == 1.0:
        return
    for i in range(h.shape[0]):
        h[i] *= gamma
        for k in range(h.shape[0]):
            g[i, k] *= gamma


@njit(cache=True, nogil=True)
def fold_joint(phi, weight, info, g, h):
    """``g += weight·φφᵀ``, ``h += info·φ`` (rows of zero features skipped)."""
    dim = phi.shape[0]
    for r in range(dim):
        pr = phi[r]
        if pr == 0.0:
            continue
        h[r] += info * pr
        for c in range(dim):
            g[r, c] += weight * pr * phi[c]


@njit(cache=True, nogil=True)
def joint_mean(a_inv, h, mu):
    """``mu = a_inv h`` (the shared models' prior mean is 0)."""
    dim = h.shape[0]
    for r in range(dim):
        s = 0.0
        for c in range(dim):
            s += a_inv[r, c] * h[c]
        mu[r] = s


@njit(cache=True, nogil=True)
def fold_linear(phi, reward, exact, g, h, mu, a_inv, u):
    """``g += φφᵀ``, ``h += rφ`` for joint features ``phi`` (D,); with ``exact`` also update
    ``a_inv`` (D, D) by Sherman–Morrison and ``mu`` (D,) (``u`` (D,) scratch)."""
    fold_joint(phi, 1.0, reward, g, h)
    if exact:
        sherman_morrison(a_inv, phi, u)
        joint_mean(a_inv, h, mu)


@njit(cache=True, nogil=True)
def update_shared(f, x, reward, gamma, lam, g, h, mu, a_inv, phi, u, clock):
    """Fold one observation with arm features ``f`` (d_arm,) and context ``x`` (d_ctx,).

    ``g`` (D, D) and ``h`` (D,) decay by ``gamma`` and gain ``φφᵀ`` and ``rφ``. Without
    forgetting the posterior (``mu`` (D,), ``a_inv`` (D, D)) is updated at once by
    Sherman–Morrison (``phi``, ``u`` (D,) scratch); with forgetting it waits for the refresh.
    Returns False, touching nothing, when ``x`` is not finite.
    """
    if not all_finite(x):
        return False
    clock[0] += 1
    decay_joint(gamma, g, h)
    joint_features(f, x, phi)
    fold_linear(phi, reward, gamma == 1.0, g, h, mu, a_inv, u)
    return True


@njit(cache=True, nogil=True)
def update_shared_batch(features, arms, xs, rewards, gamma, lam, g, h, mu, a_inv, phi, u, clock):
    """Sequential :func:`update_shared` over ``arms`` (k,), ``xs`` (k, d_ctx), ``rewards``."""
    for i in range(arms.shape[0]):
        update_shared(
            features[arms[i]], xs[i], rewards[i], gamma, lam, g, h, mu, a_inv, phi, u, clock
        )


@njit(cache=True, nogil=True)
def shared_scores(x, cand, features, mu, a_inv, v, w_buf, p_buf, mean_out, sd_out):
    """Per-candidate score mean and sd under the shared model (see module docstring).

    The context's zero entries are skipped in both sums of ``xᵀ A⁻¹_ik x`` (the request's
    ``d_arm²/2`` blocks): contexts are mostly one-hot blocks, and a skipped term adds ±0,
    so the sums are the same bits as over every entry, in a third of the work at the
    scenario's sizes. The non-zero positions go to a small array first (one allocation a
    request): a branch per entry instead measured 21.7 µs against 10.2 for the factored
    family's three score passes."""
    da = features.shape[1]
    dc = x.shape[0]
    for i in range(da):
        s = 0.0
        for q in range(dc):
            s += mu[i * dc + q] * x[q]
        w_buf[i] = s
    nz = np.empty(dc, dtype=np.int64)
    n_nz = 0
    for q in range(dc):
        if x[q] != 0.0:
            nz[n_nz] = q
            n_nz += 1
    for i in range(da):
        for k in range(i, da):
            s = 0.0
            for a in range(n_nz):
                q = nz[a]
                row = i * dc + q
                inner = 0.0
                for b in range(n_nz):
                    r = nz[b]
                    inner += a_inv[row, k * dc + r] * x[r]
                s += x[q] * inner
            p_buf[i, k] = s
            p_buf[k, i] = s
    for j in range(cand.shape[0]):
        f = features[cand[j]]
        m = 0.0
        var = 0.0
        for i in range(da):
            fi = f[i]
            m += fi * w_buf[i]
            row = 0.0
            for k in range(da):
                row += p_buf[i, k] * f[k]
            var += fi * row
        mean_out[j] = m
        sd_out[j] = v * np.sqrt(var) if var > 0.0 else 0.0


@njit(cache=True, nogil=True)
def psd_cholesky(a, out):
    """Lower ``out`` (d, d) with ``out outᵀ = a`` for a symmetric positive semi-definite ``a``.

    A pivot that rounding leaves at or near zero (relative to its diagonal entry) gets a
    zero column, so a singular ``a`` (a context of zeros) yields a factor of the same
    degenerate normal, not NaN or a huge column."""
    d = a.shape[0]
    for j in range(d):
        s = a[j, j]
        for k in range(j):
            s -= out[j, k] * out[j, k]
        piv = np.sqrt(s) if s > 1e-12 * a[j, j] and s > 0.0 else 0.0
        out[j, j] = piv
        for i in range(j + 1, d):
            t = a[i, j]
            for k in range(j):
                t -= out[i, k] * out[j, k]
            out[i, j] = t / piv if piv > 0.0 else 0.0
        for i in range(j):
            out[i, j] = 0.0


@njit(cache=True, nogil=True)
def joint_win_shares(cand, features, mean, v, p_fold, z, n, l_buf, best, arg, p):
    """Share of bank rows won by each candidate when bank row ``m`` draws the folded weights
    ``w̃_m = w + v·L z[:d_arm, m]`` (``L Lᵀ = p_fold``) and candidate ``j`` scores
    ``f_j·w̃_m = mean[j] + f_j·(v L z[:, m])``.

    Parameters
    ----------
    cand : int64 (n,)
        Candidate arm indices, rows of ``features`` (capacity, d_arm).
    mean : float64 (>= n,)
        Score means ``f_j·w`` (from :func:`shared_scores`).
    v : float
        Score scale.
    p_fold : float64 (d_arm, d_arm)
        ``P`` of the request (from :func:`shared_scores`).
    z : float32 (slots, M), slots >= d_arm
        Standard normals; bank row ``m`` uses ``z[:d_arm, m]``.
    l_buf : (d_arm, d_arm), best, arg : float64 / int64 (>= M,)
        Scratch (``best`` and ``arg`` used as float32 / int32).
    p : float64 (>= n,)
        Output probabilities.
    """
    da = p_fold.shape[0]
    psd_cholesky(p_fold, l_buf)
    # score_jm = mean_j + (v Lᵀ f_j)·z[:, m]: one small single-precision matrix product for
    # the whole bank, compared in float32 (the shares count wins in those very scores)
    b = np.empty((n, da), dtype=np.float32)
    for j in range(n):
        f = features[cand[j]]
        for i in range(da):
            acc = 0.0
            for k in range(i, da):
                acc += f[k] * l_buf[k, i]
            b[j, i] = v * acc
    scores = np.dot(b, z[:da])
    m_rows = z.shape[1]
    top = best.view(np.float32)
    who = arg.view(np.int32)
    mu0 = np.float32(mean[0])
    for m in range(m_rows):
        top[m] = mu0 + scores[0, m]
        who[m] = 0
    for j in range(1, n):
        mu = np.float32(mean[j])
        jj = np.int32(j)
        for m in range(m_rows):
            sc = mu + scores[j, m]
            wins = sc > top[m]
            top[m] = sc if wins else top[m]
            who[m] = jj if wins else who[m]
    tally_wins(who, m_rows, n, p)


@njit(cache=True, nogil=True)
def shared_probs(cand, x, features, mu, a_inv, v, z, rule, ucb_alpha, joint, l_buf, best,
                  arg, w_buf, pp_buf, mean_buf, sd_buf, p):  # fmt: skip
    """Base probabilities ``p[:n]`` of one request: scores, then the rule (joint or
    marginal Thompson draws, UCB, greedy); score means and sds stay in the buffers."""
    n = cand.shape[0]
    shared_scores(x, cand, features, mu, a_inv, v, w_buf, pp_buf, mean_buf, sd_buf)
    if joint and rule == RULE_THOMPSON:
        joint_win_shares(cand, features, mean_buf, v, pp_buf, z, n, l_buf, best, arg, p)
    else:
        scores_to_probs(mean_buf, sd_buf, n, z, rule, ucb_alpha, best, arg, p)


@njit(cache=True, nogil=True)
def check_bounded_request(cand, x, bound, active, pos_of_arm, slots, err):
    """:func:`.pipeline.check_request` of one request (``err`` = 0, position) after its
    context ``x`` (d,) is checked against ``bound``, the largest magnitude accepted
    (``ERR_NONFINITE`` beyond it, or for NaN): what a lean entry checks first."""
    err[0] = 0
    for q in range(x.shape[0]):
        if not abs(x[q]) <= bound:  # NaN fails too
            return ERR_NONFINITE
    return check_request(cand, x, active, pos_of_arm, slots, err)


@njit(cache=True, nogil=True)
def decide_shared_one(
    cand, xs, bound, active, features, mu, a_inv, v, z, rule, ucb_alpha, eps, joint, l_buf,
    rng_state, pos_of_arm, best, arg, w_buf, pp_buf, mean_buf, sd_buf, p, err,
):  # fmt: skip
    """One request without contracts: :func:`decide_shared` on a batch of one, step for
    step (same checks, probabilities and uniform), over the 24 arguments it needs instead
    of 44 (the link only shapes what contracts weigh, so it is not applied).

    Parameters
    ----------
    cand : int64 (C,); xs : float64 (1, d_ctx) the context
    bound : float, the largest context magnitude accepted (``max_abs_input``)
    active … sd_buf : as :func:`decide_shared`; p : float64 (>= C,) the final
    probabilities; err : int64 (2,)

    Returns
    -------
    int
        The chosen position, or a negative error code (``err`` = 0, position) with nothing
        changed: ``ERR_NONFINITE`` also for a context entry beyond ``bound``.
    """
    x = xs[0]
    code = check_bounded_request(cand, x, bound, active, pos_of_arm, z.shape[0], err)
    if code != OK:
        return code
    shared_probs(cand, x, features, mu, a_inv, v, z, rule, ucb_alpha, joint, l_buf, best,
                  arg, w_buf, pp_buf, mean_buf, sd_buf, p)  # fmt: skip
    n = cand.shape[0]
    mix_uniform(p, n, eps)
    return draw_index(p, n, rng_state)


@njit(cache=True, nogil=True)
def decide_shared_ids_one(
    table, chars, offsets, q, cand, xs, bound, active, features, mu, a_inv, v, z, rule,
    ucb_alpha, eps, joint, l_buf, rng_state, pos_of_arm, best, arg, w_buf, pp_buf, mean_buf,
    sd_buf, p, err,
):  # fmt: skip
    """:func:`decide_shared_one` on candidates given as ids (``q``: joined by 0, or a
    string array's rows; see :func:`.id_query.lookup_active`), resolved into ``cand`` in
    the same call: the facade's 200 merchant ids are one compiled call.

    Returns
    -------
    int
        As :func:`decide_shared_one`, or ``ERR_LOOKUP`` (``err`` = lookup status,
        position) when an id is unknown, retired or the join does not split into n ids.
        The ids are resolved before the context is looked at. Nothing changes on an error.
    """
    if not found_all(table, chars, offsets, active, q, cand, err):
        return ERR_LOOKUP
    return decide_shared_one(
        cand, xs, bound, active, features, mu, a_inv, v, z, rule, ucb_alpha, eps, joint,
        l_buf, rng_state, pos_of_arm, best, arg, w_buf, pp_buf, mean_buf, sd_buf, p, err,
    )  # fmt: skip


@njit(cache=True, nogil=True)
def decide_shared(
    cand_ptr, cand_idx, xs, times, codes, draw,
    active, features, mu, a_inv, v, link, z, rule, ucb_alpha, eps, joint, l_buf,
    def_i, def_f, allowed, eta, backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i,
    ring, member, before,
    rng_state, pos_of_arm, best, arg, w_buf, pp_buf, mean_buf, sd_buf, p_out, chosen, forced,
    adjusted, err,
):  # fmt: skip
    """Decide a CSR batch of requests under the shared model through the pipeline.

    ``features`` (capacity, d_arm), ``mu`` (D,), ``a_inv`` (D, D), ``z`` float32 (slots, M);
    ``joint`` samples Thompson scores jointly (:func:`joint_win_shares`, its factor in
    ``l_buf`` (d_arm, d_arm)) rather than per candidate; ``w_buf`` (d_arm,) and ``pp_buf``
    (d_arm, d_arm) scratch; ``link`` as in
    :func:`allocator.kernels.linear.decide_linear`; the other arguments are those
    of :func:`allocator.kernels.per_arm.decide_per_arm`.
    """
    code = check_requests(cand_ptr, cand_idx, xs, active, pos_of_arm, z.shape[0], err)
    if code != OK:
        return code
    contracts = draw and def_i.shape[0] > 0
    prefetch_request(cand_ptr, cand_idx, 0, features, contracts, arm_group, n_obs, first_seen)
    for r in range(cand_ptr.shape[0] - 1):
        prefetch_request(
            cand_ptr, cand_idx, r + 1, features, contracts, arm_group, n_obs, first_seen
        )
        lo = cand_ptr[r]
        c = cand_idx[lo : cand_ptr[r + 1]]
        n = c.shape[0]
        p = p_out[lo : lo + n]
        shared_probs(c, xs[r], features, mu, a_inv, v, z, rule, ucb_alpha, joint, l_buf,
                      best, arg, w_buf, pp_buf, mean_buf, sd_buf, p)  # fmt: skip
        apply_link(mean_buf, sd_buf, v, n, link)
        chosen[r], forced[r], adjusted[r] = finish(
            p, n, c, mean_buf, eps, times[r], codes[r], draw, def_i, def_f, allowed, eta,
            backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i, ring, member, before,
            rng_state,
        )  # fmt: skip
    return OK
