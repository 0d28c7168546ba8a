"""Factored value: ``value = P(click) · P(order | click) · E[value | order]``, each factor
learned where it is observed, the product sampled per bank row.

Three shared models over ``φ = vec(f ⊗ x)``: a logistic one for the click (every
impression), a logistic one for the order (clicked impressions only), and a Gaussian
regression of the log order value (orders with a value only), whose noise variance is
``σ²`` (Normal–inverse-gamma, refreshed). An impression's app value is
``w_c·c + c·o·(w_o + w_g·rate_a·typical·exp(u + σ²/2))`` for click probability ``c``,
order probability ``o`` and log-value mean ``u``. Thompson sampling draws the three
scores of candidate ``j`` from their marginals through bank row ``m`` (columns ``m``,
``M + m``, ``2M + m`` of ``z``), so the propensity (the share of rows a candidate wins) is
exact for that procedure, as for the single-score families. The order logit is
``b + φᵀθ`` with a fixed offset ``b`` (``typical_conversion``'s logit; 0 when unset), added
in the link where a probability is formed, so the score bank and the propensities are
unchanged.

With a hybrid click model (``click_model: hybrid``) the click logit also carries the arm's
offset (``kernels.hybrid``): its posterior mean and variance add to the shared part's, at
O(1) per candidate; the order and value factors are unchanged. The kernels take the
offsets' mean and variance arrays, empty (length 0) for the shared click model.
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import (
    OK,
    RULE_GREEDY,
    RULE_THOMPSON,
    all_finite,
    argmax_onehot,
    tally_wins,
)
from allocator.kernels.hybrid import hybrid_scores, update_hybrid
from allocator.kernels.link import predictive_probability, sigmoid
from allocator.kernels.logistic import fold_logistic
from allocator.kernels.pipeline import check_requests, finish
from allocator.kernels.shared_linear import decay_joint, fold_linear, joint_features, shared_scores

#: a log value beyond this is clipped before ``exp`` (far above any real order value)
_LOG_CLIP = 300.0


@njit(cache=True, nogil=True)
def update_factored_batch(
    features, arms, xs, click, order, log_value, gamma, order_offset, cg, ch, cmu, ca, og, oh,
    omu, oa, vg, vh, vmu, va, vstats, phi, u, clock,
):  # fmt: skip
    """Fold impressions ``arms`` (k,) with contexts ``xs`` (k, d_ctx) in order.

    ``click``, ``order`` (k,) are 0 or 1 (order only when clicked); ``log_value`` (k,) is
    the log order value, NaN where none was observed (no order, or no value reported): a
    factor that was not observed is not updated. Per factor ``*g`` (D, D), ``*h`` (D,)
    statistics and ``*mu`` (D,), ``*a`` (D, D) posterior (updated at once without
    forgetting, at the refresh with it); ``vstats`` (2,) = discounted count and sum of
    squares of the log values. Every statistic decays by ``gamma`` per impression (the
    clock is one tick per impression). ``order_offset`` is the order logit's fixed offset
    (:func:`allocator.kernels.logistic.fold_logistic`). ``phi``, ``u`` (D,) scratch. Inputs
    are checked.
    """
    exact = gamma == 1.0
    for i in range(arms.shape[0]):
        x = xs[i]
        if not all_finite(x):
            continue
        f = features[arms[i]]
        clock[0] += 1
        decay_joint(gamma, cg, ch)
        joint_features(f, x, phi)
        fold_logistic(phi, click[i], exact, cg, ch, cmu, ca, u, 0.0)
        fold_order_value(
            f, x, click[i], order[i], log_value[i], gamma, order_offset, og, oh, omu, oa, vg,
            vh, vmu, va, vstats, phi, u,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def update_factored_hybrid_batch(
    features, arms, xs, click, order, log_value, gamma, order_offset, cg, ch, cmu, offset_mean,
    t_last, n, s, r, dirty, og, oh, omu, oa, vg, vh, vmu, va, vstats, phi, u, clock,
):  # fmt: skip
    """:func:`update_factored_batch` with the hybrid click model: the click folds into the
    shared ``cg``, ``ch`` and the arm's ``n``, ``s``, ``r`` (linearised at the refreshed
    ``cmu`` and ``offset_mean``, see :func:`allocator.kernels.hybrid.update_hybrid`, which
    ticks the clock); the order and value factors as there."""
    for i in range(arms.shape[0]):
        a = arms[i]
        x = xs[i]
        if update_hybrid(
            a, features[a], x, click[i], gamma, True, cg, ch, cmu, offset_mean, clock, t_last,
            n, s, r, phi, dirty,
        ):  # fmt: skip
            fold_order_value(
                features[a], x, click[i], order[i], log_value[i], gamma, order_offset, og, oh,
                omu, oa, vg, vh, vmu, va, vstats, phi, u,
            )  # fmt: skip


@njit(cache=True, nogil=True)
def fold_order_value(f, x, click, order, log_value, gamma, order_offset, og, oh, omu, oa, vg,
                     vh, vmu, va, vstats, phi, u):  # fmt: skip
    """One impression's tick of the order and value factors: both decay by ``gamma``; the
    order folds in if the impression was clicked, the log value if it is not NaN."""
    exact = gamma == 1.0
    decay_joint(gamma, og, oh)
    decay_joint(gamma, vg, vh)
    vstats *= gamma
    if click > 0.0:
        joint_features(f, x, phi)
        fold_logistic(phi, order, exact, og, oh, omu, oa, u, order_offset)
    if not np.isnan(log_value):
        joint_features(f, x, phi)
        fold_linear(phi, log_value, exact, vg, vh, vmu, va, u)
        vstats[0] += 1.0
        vstats[1] += log_value * log_value


@njit(cache=True, nogil=True, fastmath=True)
def app_value(lc, lo, lv, rate, weights):
    """Value of logits ``lc``, ``lo`` and log value ``lv`` (already including ``σ²/2``);
    ``weights`` = (w_click, w_order, w_gmv, typical order value, the order logit's offset)."""
    c = sigmoid(lc)
    o = sigmoid(lo + weights[4])
    v = weights[3] * np.exp(min(lv, _LOG_CLIP))
    return c * (weights[0] + o * (weights[1] + weights[2] * rate * v))


@njit(cache=True, nogil=True)
def factor_scores(x, cand, features, cmu, ca, om, ov, omu, oa, vmu, va, noise_var, v, w_buf,
                  p_buf, mean3, sd3):  # fmt: skip
    """Per-candidate score means and sds of the three factors into ``mean3``, ``sd3``
    (3, >= n): click logit (plus the arm's offset, mean ``om`` and variance ``ov``, unless
    those are empty), order logit, log value (its sd scaled by ``√σ²``)."""
    if om.shape[0]:
        hybrid_scores(x, cand, features, cmu, ca, om, ov, v, w_buf, p_buf, mean3[0], sd3[0])
    else:
        shared_scores(x, cand, features, cmu, ca, v, w_buf, p_buf, mean3[0], sd3[0])
    shared_scores(x, cand, features, omu, oa, v, w_buf, p_buf, mean3[1], sd3[1])
    scale = v * np.sqrt(noise_var[0])
    shared_scores(x, cand, features, vmu, va, scale, w_buf, p_buf, mean3[2], sd3[2])


@njit(cache=True, nogil=True)
def expected_values(cand, mean3, sd3, v, noise_var, rate, weights, out):
    """Posterior mean value of each candidate (factors independent under the posterior):
    probit predictives for the two probabilities, the log-normal mean for the value."""
    half = 0.5 * noise_var[0]
    for j in range(cand.shape[0]):
        sc, so, sv = sd3[0, j] / v, sd3[1, j] / v, sd3[2, j] / v
        c = predictive_probability(mean3[0, j], sc * sc)
        o = predictive_probability(mean3[1, j] + weights[4], so * so)
        ev = weights[3] * np.exp(min(mean3[2, j] + 0.5 * sv * sv + half, _LOG_CLIP))
        out[j] = c * (weights[0] + o * (weights[1] + weights[2] * rate[cand[j]] * ev))


#: a bound is raised by this much before it skips a row (log scale: far beyond the rounding
#: of the bound and of the draw it stands for)
_LOG_MARGIN = 1e-9


@njit(cache=True, nogil=True, fastmath=True)
def log_sigmoid(z):
    """``log σ(z)`` without overflow."""
    if z >= 0.0:
        return -np.log1p(np.exp(-z))
    return z - np.log1p(np.exp(z))


@njit(cache=True, nogil=True)
def single_event_weight(weights):
    """The objective's one non-zero weight (0 click, 1 order, 2 gmv) when it has exactly
    one and it is positive, else -1: the objectives whose log value is a sum of concave
    terms in the draws (``log σ`` of the logits, the log value itself)."""
    event = -1
    for e in range(3):
        if weights[e] != 0.0:
            if event >= 0 or weights[e] < 0.0:
                return -1
            event = e
    return event


@njit(cache=True, nogil=True)
def product_win_shares(cand, mean3, sd3, noise_var, rate, weights, z, best, arg, p, mean_value):
    """Share of bank rows each candidate wins when its three scores are drawn from their
    marginals through ``z`` (slots, 3M) and combined by :func:`app_value`; ``best`` (>= 2M)
    and ``arg`` (>= M) are scratch.

    Every row's winner is the first candidate (in request order) with the largest drawn
    value. Most draws cannot win, and for an objective of one event (click, order or gmv,
    see :func:`single_event_weight`) a draw is bounded without a transcendental call: its
    log value is ``log w + log σ(a) [+ log σ(b) [+ log value]]``, and ``log σ`` is concave,
    so its tangent at the candidate's mean logit bounds it from above; the bound is linear
    in the row's three normals. The candidate with the largest posterior mean value
    (``mean_value``) is drawn on every row first; another candidate only on the rows where
    its bound reaches the log of the best so far (kept in ``best[M:2M]``). The winners,
    hence the probabilities, are those of drawing every candidate on every row (tested to
    the bit); other objectives draw every candidate on every row.
    """
    n = cand.shape[0]
    m_rows = z.shape[1] // 3
    half = 0.5 * noise_var[0]
    event = single_event_weight(weights)
    lead = 0
    if event >= 0:
        for j in range(1, n):
            if mean_value[j] > mean_value[lead]:
                lead = j
    for m in range(m_rows):
        best[m] = -np.inf
        best[m_rows + m] = -np.inf
        arg[m] = lead
    for step in range(n):
        # the lead first, then the others in request order
        j = lead if step == 0 else (step - 1 if step <= lead else step)
        mc, mo, mv = mean3[0, j], mean3[1, j], mean3[2, j] + half
        sc, so, sv = sd3[0, j], sd3[1, j], sd3[2, j]
        zj = z[j]
        r = rate[cand[j]]
        bounded = event >= 0 and step > 0
        c0 = k1 = k2 = k3 = 0.0
        if bounded:  # log value <= c0 + k1·z_click + k2·z_order + k3·z_value
            c0 = log_sigmoid(mc) + _LOG_MARGIN
            k1 = sigmoid(-mc) * sc
            if event == 0:
                c0 += np.log(weights[0])
            else:
                b0 = mo + weights[4]
                c0 += log_sigmoid(b0)
                k2 = sigmoid(-b0) * so
                if event == 1:
                    c0 += np.log(weights[1])
                else:
                    scale = weights[2] * r * weights[3]  # 0 for a group that pays nothing
                    c0 += (np.log(scale) if scale > 0.0 else -np.inf) + mv
                    k3 = sv
        for m in range(m_rows):
            z1, z2, z3 = zj[m], zj[m_rows + m], zj[2 * m_rows + m]
            if bounded and c0 + k1 * z1 + k2 * z2 + k3 * z3 < best[m_rows + m]:
                continue
            val = app_value(mc + sc * z1, mo + so * z2, mv + sv * z3, r, weights)
            if val > best[m] or (val == best[m] and j < arg[m]):
                best[m] = val
                arg[m] = j
                if event >= 0:
                    best[m_rows + m] = np.log(val) if val > 0.0 else -np.inf
    tally_wins(arg, m_rows, n, p)


@njit(cache=True, nogil=True)
def decide_factored(
    cand_ptr, cand_idx, xs, times, codes, draw,
    active, features, cmu, ca, om, ov, omu, oa, vmu, va, noise_var, rate, weights, v, z, rule,
    ucb_alpha, eps,
    def_i, def_f, allowed, eta, backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i,
    ring, member, before,
    rng_state, pos_of_arm, best, arg, w_buf, pp_buf, mean3, sd3, mean_buf, p_out, chosen,
    forced, adjusted, err,
):  # fmt: skip
    """Decide a CSR batch under the factored value model through the pipeline.

    ``features`` (capacity, d_arm); click, order and log-value posteriors ``*mu`` (D,),
    ``*a`` (D, D) (inverse precisions); the click offsets' mean and variance ``om``, ``ov``
    (capacity,), or (0,) for the shared click model; ``noise_var`` (1,) the log value's ``σ²``;
    ``rate`` (capacity,) each arm's value per unit of order value; ``weights`` (5,) as in
    :func:`app_value`; ``z`` (slots, 3M). Thompson: :func:`product_win_shares`; UCB: the
    value at every factor's ``mean + ucb_alpha·sd``; greedy: the posterior mean value.
    Contracts weigh the posterior mean value. Other arguments as in
    :func:`allocator.kernels.shared_linear.decide_shared`.
    """
    code = check_requests(cand_ptr, cand_idx, xs, active, pos_of_arm, z.shape[0], err)
    if code != OK:
        return code
    for r in range(cand_ptr.shape[0] - 1):
        lo = cand_ptr[r]
        c = cand_idx[lo : cand_ptr[r + 1]]
        n = c.shape[0]
        p = p_out[lo : lo + n]
        factor_scores(xs[r], c, features, cmu, ca, om, ov, omu, oa, vmu, va, noise_var, v,
                      w_buf, pp_buf, mean3, sd3)  # fmt: skip
        expected_values(c, mean3, sd3, v, noise_var, rate, weights, mean_buf)
        if rule == RULE_THOMPSON:
            product_win_shares(c, mean3, sd3, noise_var, rate, weights, z, best, arg, p,
                               mean_buf)  # fmt: skip
        elif rule == RULE_GREEDY:
            argmax_onehot(mean_buf, n, p)
        else:
            half = 0.5 * noise_var[0]
            for j in range(n):
                best[j] = app_value(
                    mean3[0, j] + ucb_alpha * sd3[0, j], mean3[1, j] + ucb_alpha * sd3[1, j],
                    mean3[2, j] + half + ucb_alpha * sd3[2, j], rate[c[j]], weights,
                )  # fmt: skip
            argmax_onehot(best, n, p)
        chosen[r], forced[r], adjusted[r] = finish(
            p, n, c, mean_buf, eps, times[r], codes[r], draw, def_i, def_f, allowed, eta,
            backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i, ring, member, before,
            rng_state,
        )  # fmt: skip
    return OK


@njit(cache=True, nogil=True)
def predict_factored(arms, xs, features, cmu, ca, om, ov, omu, oa, vmu, va, noise_var, rate,
                     weights, w_buf, p_buf, mean3, sd3, out):  # fmt: skip
    """Posterior mean value of ``arms[i]`` (n,) in ``xs[i]`` (n, d_ctx) into ``out``
    (``om``, ``ov`` as in :func:`decide_factored`)."""
    for i in range(arms.shape[0]):
        a = arms[i : i + 1]
        factor_scores(xs[i], a, features, cmu, ca, om, ov, omu, oa, vmu, va, noise_var, 1.0,
                      w_buf, p_buf, mean3, sd3)  # fmt: skip
        expected_values(a, mean3, sd3, 1.0, noise_var, rate, weights, out[i : i + 1])
