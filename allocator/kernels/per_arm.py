"""Decisions for per-arm (non-contextual) posteriors backed by a sample bank.

Beta–Bernoulli and Normal–Gamma share this path: the bank holds ``M`` posterior draws per
arm (refreshed only for arms whose statistics changed), and per-arm mean and standard
deviation arrays serve the UCB and greedy rules.
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import (
    OK,
    RULE_GREEDY,
    RULE_THOMPSON,
    argmax_onehot,
    bank_win_shares,
    clear_marks,
    mark_candidates,
    mix_uniform,
    mix_uniform_and_draw,
)


@njit(cache=True, nogil=True)
def _base_probs(cand, pos_of_arm, bank, winner, mean, sd, rule, ucb_alpha, best, arg, p):
    n = cand.shape[0]
    if rule == RULE_THOMPSON:
        bank_win_shares(bank, cand, pos_of_arm, winner, best, arg, p)
    else:
        for j in range(n):
            a = cand[j]
            best[j] = mean[a] if rule == RULE_GREEDY else mean[a] + ucb_alpha * sd[a]
        argmax_onehot(best, n, p)


@njit(cache=True, nogil=True)
def decide_per_arm(
    cand,
    active,
    pos_of_arm,
    bank,
    winner,
    mean,
    sd,
    rule,
    ucb_alpha,
    eps,
    rng_state,
    best,
    arg,
    p,
    err,
    draw,
):
    """Choose one candidate; fill ``p[:C]`` with the exact choice probabilities.

    Parameters
    ----------
    cand : int64 (C,) arm indices; active : bool (capacity,); pos_of_arm : int64 (capacity,)
    bank : float32 (capacity, M); winner : int64 (M,); mean, sd : float64 (capacity,)
    rule : int (0 Thompson, 1 UCB, 2 greedy); ucb_alpha, eps : float
    rng_state : uint64 (2,) decision stream, advanced by one draw on success
    best, arg : scratch (>= max(M, C),); p : float64 (>= C,) output; err : int64 (1,)
    draw : bool, False = only fill ``p`` (ε mixed in) for a caller that draws itself

    Returns
    -------
    int
        Chosen position in ``cand`` (>= 0), or a negative error code from
        :func:`mark_candidates` with no state changed.
    """
    code = mark_candidates(cand, active, pos_of_arm, err)
    if code != OK:
        return code
    n = cand.shape[0]
    _base_probs(cand, pos_of_arm, bank, winner, mean, sd, rule, ucb_alpha, best, arg, p)
    clear_marks(cand, n, pos_of_arm)
    if not draw:
        mix_uniform(p, n, eps)
        return 0
    return mix_uniform_and_draw(p, n, eps, rng_state)


@njit(cache=True, nogil=True)
def decide_per_arm_batch(
    cand_ptr,
    cand_idx,
    active,
    pos_of_arm,
    bank,
    winner,
    mean,
    sd,
    rule,
    ucb_alpha,
    eps,
    rng_state,
    best,
    arg,
    p_out,
    chosen,
    err,
):
    """Batch form of :func:`decide_per_arm` over CSR candidate lists.

    ``cand_ptr`` (R+1,) and ``cand_idx`` (nnz,) hold request ``r``'s candidates in
    ``cand_idx[cand_ptr[r]:cand_ptr[r+1]]``; ``p_out`` (nnz,) receives the probabilities
    aligned with ``cand_idx`` and ``chosen`` (R,) the chosen positions within each request.
    All requests are checked before any draw, so an error leaves the stream untouched;
    ``err`` gets ``[request, position]`` of the first bad candidate.
    """
    n_req = cand_ptr.shape[0] - 1
    one = np.zeros(1, dtype=np.int64)
    for r in range(n_req):
        c = cand_idx[cand_ptr[r] : cand_ptr[r + 1]]
        code = mark_candidates(c, active, pos_of_arm, one)
        if code != OK:
            err[0] = r
            err[1] = one[0]
            return code
        clear_marks(c, c.shape[0], pos_of_arm)
    for r in range(n_req):
        lo = cand_ptr[r]
        c = cand_idx[lo : cand_ptr[r + 1]]
        n = c.shape[0]
        p = p_out[lo : lo + n]
        mark_candidates(c, active, pos_of_arm, one)
        _base_probs(c, pos_of_arm, bank, winner, mean, sd, rule, ucb_alpha, best, arg, p)
        clear_marks(c, n, pos_of_arm)
        chosen[r] = mix_uniform_and_draw(p, n, eps, rng_state)
    return OK


@njit(cache=True, nogil=True)
def refresh_winners(bank, n_arms, redrawn, is_redrawn, winner, full):
    """Keep ``winner[m]`` = argmax over arms ``[0, n_arms)`` of bank row ``m``.

    Parameters
    ----------
    bank : float32 (capacity, M)
    redrawn : int64 (k,) arms whose columns were just redrawn; is_redrawn : bool (capacity,)
    winner : int64 (M,), updated in place
    full : bool, recompute every row from scratch (after a resize)

    Only rows whose current winner was redrawn are rescanned in full; the others compare
    the redrawn arms with their winner, so a refresh touching few arms costs O(M·k).
    """
    m_rows = winner.shape[0]
    for m in range(m_rows):
        w = winner[m]
        if full or w < 0 or is_redrawn[w]:
            b = 0
            bv = bank[0, m]
            for a in range(1, n_arms):
                v = bank[a, m]
                if v > bv:
                    bv = v
                    b = a
            winner[m] = b
        else:
            bv = bank[w, m]
            b = w
            for i in range(redrawn.shape[0]):
                a = redrawn[i]
                v = bank[a, m]
                if v > bv or (v == bv and a < b):
                    bv = v
                    b = a
            winner[m] = b
