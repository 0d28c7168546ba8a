"""Decisions for per-arm (non-contextual) posteriors backed by a sample bank.

Beta–Bernoulli and Normal–Gamma share this path: the bank holds ``M`` posterior draws per
arm (refreshed only for arms whose statistics changed), and per-arm mean and standard
deviation arrays serve the UCB and greedy rules.
"""

import numpy as np
from numba import njit

from allocator.kernels.choice import (
    ERR_LOOKUP,
    OK,
    RULE_GREEDY,
    RULE_THOMPSON,
    argmax_onehot,
    bank_win_shares,
    clear_marks,
    draw_index,
    mark_candidates,
    mix_uniform,
)
from allocator.kernels.id_query import lookup_active
from allocator.kernels.idtable import FOUND
from allocator.kernels.pipeline import check_requests, finish

#: arms up to which a policy fills its bank cell by cell in arm order (beyond, it may group
#: arms sharing a prior); a replay walk compiles the Beta refresh only up to this size
CELL_BY_CELL_MAX = 64


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
    cand_ptr, cand_idx, xs, times, codes, draw,
    active, bank, winner, mean, sd, rule, ucb_alpha, eps,
    def_i, def_f, allowed, eta, backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i,
    ring, member, before,
    rng_state, pos_of_arm, best, arg, mu_buf, p_out, chosen, forced, adjusted, err,
):  # fmt: skip
    """Decide a CSR batch of requests through the pipeline (see :mod:`.pipeline`).

    Parameters
    ----------
    cand_ptr : int64 (R+1,); cand_idx : int64 (nnz,); xs : float64 (R, 0) (no context)
    times : float64 (R,) epoch seconds; codes : int64 (R, A) request attribute codes
    draw : bool, False = fill ε-mixed policy probabilities only (stream untouched)
    active : bool (capacity,); bank : float32 (capacity, M); winner : int64 (M,)
    mean, sd : float64 (capacity,); rule : int; ucb_alpha, eps : float
    def_i … before : the contract arrays of :func:`.pipeline.finish`
    rng_state : uint64 (2,); pos_of_arm : int64 (capacity,) scratch (all -1)
    best, arg : scratch (>= max(M, C),); mu_buf : float64 (>= C,) scratch
    p_out : float64 (nnz,) probabilities aligned with ``cand_idx``
    chosen, forced, adjusted : int64 (R,) outputs; err : int64 (2,)

    Returns
    -------
    int
        ``OK``, or a negative error code (``err`` = request, position) with nothing changed.
    """
    code = check_requests(cand_ptr, cand_idx, xs, active, pos_of_arm, cand_idx.shape[0], err)
    if code != OK:
        return code
    one = np.zeros(1, dtype=np.int64)
    for r in range(cand_ptr.shape[0] - 1):
        lo = cand_ptr[r]
        c = cand_idx[lo : cand_ptr[r + 1]]
        n = c.shape[0]
        p = p_out[lo : lo + n]
        mark_candidates(c, active, pos_of_arm, one)
        _base_probs(c, pos_of_arm, bank, winner, mean, sd, rule, ucb_alpha, best, arg, p)
        clear_marks(c, n, pos_of_arm)
        for j in range(n):
            mu_buf[j] = mean[c[j]]
        chosen[r], forced[r], adjusted[r] = finish(
            p, n, c, mu_buf, eps, times[r], codes[r], draw, def_i, def_f, allowed, eta,
            backstop, surplus, arm_group, n_obs, first_seen, st_f, st_i, ring, member, before,
            rng_state,
        )  # fmt: skip
    return OK


@njit(cache=True, nogil=True)
def decide_per_arm_one(
    cand, active, bank, winner, mean, sd, rule, ucb_alpha, eps, rng_state, pos_of_arm, best,
    arg, p, err,
):  # fmt: skip
    """One request without contracts: :func:`decide_per_arm` on a batch of one, step for
    step (same checks, probabilities and uniform), over the 15 arguments it needs.

    A call from Python unboxes every argument; the serving hot path's common case (no
    contract, no context) pays for these instead of the full pipeline's 38.

    Parameters
    ----------
    cand : int64 (C,); active, bank, winner, mean, sd, rule, ucb_alpha, eps, rng_state,
    pos_of_arm, best, arg : as :func:`decide_per_arm`
    p : float64 (>= C,) the final probabilities; err : int64 (2,) as :func:`decide_per_arm`

    Returns
    -------
    int
        The chosen position, or a negative error code (``err`` = 0, position) with nothing
        changed.
    """
    err[0] = 0
    code = mark_candidates(cand, active, pos_of_arm, err[1:])
    if code != OK:
        return code
    n = cand.shape[0]
    _base_probs(cand, pos_of_arm, bank, winner, mean, sd, rule, ucb_alpha, best, arg, p)
    clear_marks(cand, n, pos_of_arm)
    mix_uniform(p, n, eps)
    return draw_index(p, n, rng_state)


@njit(cache=True, nogil=True)
def decide_joined_one(
    table, chars, offsets, q, cand, active, bank, winner, mean, sd, rule, ucb_alpha, eps,
    rng_state, pos_of_arm, best, arg, p, err,
):  # fmt: skip
    """:func:`decide_per_arm_one` on candidates given as ids: resolved from ``q`` into
    ``cand`` by :func:`.id_query.lookup_active` (active ids only) in the same call, so the
    serving facade's common request is one compiled call.

    Parameters
    ----------
    table, chars, offsets : the id table; q : uint8 or uint32 (L,) the ids joined by 0, or
    uint32 (n, w) the codepoints of a numpy string array's rows
    cand : int64 (n,) receives the indices; the rest as :func:`decide_per_arm_one`

    Returns
    -------
    int
        The chosen position; ``ERR_LOOKUP`` (``err`` = lookup status, position) when an
        id is unknown, retired or the join does not split into n ids; else a negative
        error code of :func:`decide_per_arm_one`. Nothing changes on an error.
    """
    status, at = lookup_active(table, chars, offsets, active, q, cand)
    if status != FOUND:
        err[0] = status
        err[1] = at
        return ERR_LOOKUP
    return decide_per_arm_one(
        cand, active, bank, winner, mean, sd, rule, ucb_alpha, eps, rng_state, pos_of_arm,
        best, arg, p, err,
    )  # fmt: skip


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
