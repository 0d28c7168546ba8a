"""The hybrid model: shared weights over ``φ = vec(f ⊗ x)`` plus one offset per arm.

A score is ``φᵀθ + b_a``: the shared part carries what an arm's features predict, the
offset ``b_a ~ N(β_a, 1/κ_a)`` what its own traffic shows beyond them. Every observation
(weight ``w``, information ``i``: 1 and ``y`` for Gaussian rewards, the Laplace factor for
binary ones) adds ``wφφᵀ``, ``iφ`` to the shared statistics ``G``, ``h`` and ``w``, ``wx``,
``i`` to the arm's ``n``, ``s``, ``r``. Because ``f_a`` is fixed, the arm's cross term
``Σ wφ = f_a ⊗ s_a`` needs only ``s_a`` (d_ctx,): memory per arm stays O(d_ctx) while the
joint posterior of ``(θ, b)`` stays exact (the Schur complement, ``policies.hybrid``).
Decisions read the refreshed ``θ`` posterior and each arm's cached offset mean and
variance: a candidate costs :func:`shared_scores`' O(d_arm²) plus O(1).
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import OK, all_finite
from allocator.kernels.linear import scores_to_probs
from allocator.kernels.link import apply_link, predictive_probability, sigmoid
from allocator.kernels.pipeline import check_requests, finish
from allocator.kernels.shared_linear import decay_joint, fold_joint, joint_features, shared_scores


@njit(cache=True, nogil=True)
def update_hybrid(
    arm, f, x, reward, gamma, logit, g, h, mu, offset_mean, clock, t_last, n, s, r, phi, dirty
):
    """Fold one observation of ``arm`` (arm features ``f`` (d_arm,), context ``x`` (d_ctx,)).

    ``g`` (D, D), ``h`` (D,) decay by ``gamma`` at every tick; the arm's ``n``, ``s``
    (capacity, d_ctx), ``r`` (capacity,) lazily since ``t_last``. With ``logit`` the factor
    is linearised at the refreshed means ``mu`` (D,) and ``offset_mean`` (capacity,).
    ``phi`` (D,) scratch. Returns False, touching nothing, when ``x`` is not finite.
    """
    if not all_finite(x):
        return False
    t = clock[0] + 1
    clock[0] = t
    decay_joint(gamma, g, h)
    joint_features(f, x, phi)
    w = 1.0
    info = reward
    if logit:
        z = offset_mean[arm]
        for a in range(phi.shape[0]):
            z += phi[a] * mu[a]
        p = sigmoid(z)
        w = p * (1.0 - p)
        info = w * z + reward - p
    fold_joint(phi, w, info, g, h)
    dec = 1.0 if gamma == 1.0 else gamma ** (t - t_last[arm])
    sa = s[arm]
    for q in range(x.shape[0]):
        sa[q] = dec * sa[q] + w * x[q]
    n[arm] = dec * n[arm] + w
    r[arm] = dec * r[arm] + info
    t_last[arm] = t
    dirty[arm] = True
    return True


@njit(cache=True, nogil=True)
def update_hybrid_batch(
    features, arms, xs, rewards, gamma, logit, g, h, mu, offset_mean, clock, t_last, n, s, r,
    phi, dirty,
):  # fmt: skip
    """Sequential :func:`update_hybrid` over ``arms`` (k,), ``xs`` (k, d_ctx), ``rewards``."""
    for i in range(arms.shape[0]):
        a = arms[i]
        update_hybrid(
            a, features[a], xs[i], rewards[i], gamma, logit, g, h, mu, offset_mean, clock,
            t_last, n, s, r, phi, dirty,
        )  # fmt: skip


@njit(cache=True, nogil=True)
def hybrid_scores(
    x, cand, features, mu, a_inv, offset_mean, offset_var, v, w_buf, p_buf, mean_out, sd_out
):
    """Per-candidate score mean and sd: the shared part's plus the arm's offset, whose
    posterior (given the shared mean) is ``N(offset_mean, offset_var)``."""
    shared_scores(x, cand, features, mu, a_inv, 1.0, w_buf, p_buf, mean_out, sd_out)
    for j in range(cand.shape[0]):
        a = cand[j]
        mean_out[j] += offset_mean[a]
        sd_out[j] = v * np.sqrt(sd_out[j] * sd_out[j] + offset_var[a])


@njit(cache=True, nogil=True)
def predict_hybrid(
    arms, xs, features, mu, a_inv, offset_mean, offset_var, w_buf, p_buf, m_buf, s_buf, out
):
    """Predictive ``P(y = 1)`` of ``arms[i]`` (n,) in ``xs[i]`` (n, d_ctx) into ``out``."""
    for i in range(arms.shape[0]):
        hybrid_scores(
            xs[i], arms[i : i + 1], features, mu, a_inv, offset_mean, offset_var, 1.0, w_buf,
            p_buf, m_buf, s_buf,
        )  # fmt: skip
        out[i] = predictive_probability(m_buf[0], s_buf[0] * s_buf[0])


@njit(cache=True, nogil=True)
def decide_hybrid(
    cand_ptr, cand_idx, xs, times, codes, draw,
    active, features, mu, a_inv, offset_mean, offset_var, v, link, z, rule, ucb_alpha, eps,
    def_i, def_f, allowed, eta, backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i,
    ring, member, before,
    rng_state, pos_of_arm, best, arg, w_buf, pp_buf, mean_buf, sd_buf, p_out, chosen, forced,
    adjusted, err,
):  # fmt: skip
    """Decide a CSR batch under the hybrid model through the pipeline.

    As :func:`allocator.kernels.shared_linear.decide_shared`, plus ``offset_mean`` and
    ``offset_var`` (capacity,): each candidate's score is sampled from its marginal through
    the bank ``z``, so the propensities are exact for that procedure.
    """
    code = check_requests(cand_ptr, cand_idx, xs, active, pos_of_arm, z.shape[0], err)
    if code != OK:
        return code
    for r in range(cand_ptr.shape[0] - 1):
        lo = cand_ptr[r]
        c = cand_idx[lo : cand_ptr[r + 1]]
        n = c.shape[0]
        p = p_out[lo : lo + n]
        hybrid_scores(
            xs[r], c, features, mu, a_inv, offset_mean, offset_var, v, w_buf, pp_buf, mean_buf,
            sd_buf,
        )  # fmt: skip
        scores_to_probs(mean_buf, sd_buf, n, z, rule, ucb_alpha, best, arg, p)
        apply_link(mean_buf, sd_buf, v, n, link)
        chosen[r], forced[r], adjusted[r] = finish(
            p, n, c, mean_buf, eps, times[r], codes[r], draw, def_i, def_f, allowed, eta,
            backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i, ring, member, before,
            rng_state,
        )  # fmt: skip
    return OK
