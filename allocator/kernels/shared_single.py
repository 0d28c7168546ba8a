"""The shared linear model's single request under contracts, as one bound compiled call.

:func:`allocator.kernels.shared_linear.decide_shared` serves a request with contracts in
force as a CSR batch of one, through an argument list of 44 entries that the facade used to
re-shape (ptr, times, outputs) and re-dispatch on every call, with the id lookup a
separate compiled call before it. These entries take the request as it comes (candidate
indices, or ids resolved into ``cand`` in the same call) and step through exactly what the
batch kernel does for it — checks, scores, rule, link, ε-mix, contracts, one uniform — so
the same stream gives the same decisions, propensities and contract queues either way.
:func:`learn_shared_one` is the serving path's learning step as one bound call in the same
way (the update and the policy's counters, which the Python layer used to write one by one).
"""

from numba import njit

from allocator.kernels.choice import ERR_LOOKUP, OK
from allocator.kernels.id_query import found_all
from allocator.kernels.link import apply_link
from allocator.kernels.pipeline import finish
from allocator.kernels.prefetch import prefetch
from allocator.kernels.shared_linear import check_bounded_request, shared_probs, update_shared


@njit(cache=True, nogil=True)
def prefetch_arms(cand, active, pos_of_arm, features, arm_group, n_obs, first_seen):
    """Ask for every per-arm cache line the request reads (at 10^6 arms each array is
    past the caches): the checks, the scores and the contracts then find them arriving,
    their misses overlapped at once instead of one array's loop after another's.
    ``cand`` is not checked yet: an index out of range is passed over."""
    for j in range(cand.shape[0]):
        a = cand[j]
        if 0 <= a < active.shape[0]:
            prefetch(active, a)
            prefetch(pos_of_arm, a)
            prefetch(features, a)
            prefetch(arm_group, a)
            prefetch(n_obs, a)
            prefetch(first_seen, a)


@njit(cache=True, nogil=True)
def decide_shared_contracted_one(
    cand, xs, t, codes, bound, active, features, mu, a_inv, v, link, z, rule, ucb_alpha, eps,
    joint, l_buf, def_i, def_f, allowed, eta, backstop, surplus, arm_group, n_obs,
    first_seen, st_f, st_i, ring, member, before, rng_state, pos_of_arm, best, arg, w_buf,
    pp_buf, mean_buf, sd_buf, p, out, err,
):  # fmt: skip
    """One request with contracts: :func:`.shared_linear.decide_shared` on a batch of one.

    Parameters
    ----------
    cand : int64 (C,) candidate arm indices; xs : float64 (1, d_ctx) the context
    t : float request time (epoch s); codes : int64 (1, A) the request's attribute codes
    bound : float, the largest context magnitude accepted (``max_abs_input``)
    active … before : as :func:`.shared_linear.decide_shared` (model, then contracts)
    rng_state … sd_buf : the stream and scratch, as there
    p : float64 (>= C,) the final probabilities
    out : int64 (2,) receives the forcing contract (-1 if none) and the adjusted bitmask
    err : int64 (2,) receives (0, candidate position) of a refused candidate

    Returns
    -------
    int
        The chosen position, or a negative error code with nothing changed:
        ``ERR_NONFINITE`` also for a context entry beyond ``bound`` (checked first).
    """
    x = xs[0]
    prefetch_arms(cand, active, pos_of_arm, features, arm_group, n_obs, first_seen)
    code = check_bounded_request(cand, x, bound, active, pos_of_arm, z.shape[0], err)
    if code != OK:
        return code
    n = cand.shape[0]
    shared_probs(cand, x, features, mu, a_inv, v, z, rule, ucb_alpha, joint, l_buf, best,
                  arg, w_buf, pp_buf, mean_buf, sd_buf, p)  # fmt: skip
    apply_link(mean_buf, sd_buf, v, n, link)
    pos, out[0], out[1] = finish(
        p, n, cand, mean_buf, eps, t, codes[0], True, def_i, def_f, allowed, eta, backstop,
        surplus, arm_group, n_obs, first_seen, st_f, st_i, ring, member, before, rng_state,
    )  # fmt: skip
    return pos


@njit(cache=True, nogil=True)
def decide_shared_contracted_ids_one(
    table, chars, offsets, q, cand, xs, t, codes, bound, active, features, mu, a_inv, v, link,
    z, rule, ucb_alpha, eps, joint, l_buf, def_i, def_f, allowed, eta, backstop, surplus,
    arm_group, n_obs, first_seen, st_f, st_i, ring, member, before, rng_state, pos_of_arm,
    best, arg, w_buf, pp_buf, mean_buf, sd_buf, p, out, err,
):  # fmt: skip
    """:func:`decide_shared_contracted_one` on candidates given as ids (``q``: joined by
    0, or a string array's rows; see :func:`.id_query.lookup_active`), resolved into
    ``cand`` first.

    Returns
    -------
    int
        As :func:`decide_shared_contracted_one`, or ``ERR_LOOKUP`` (``err`` = lookup
        status, position) when an id is unknown, retired or the join does not split into
        n ids. Nothing changes on an error.
    """
    if not found_all(table, chars, offsets, active, q, cand, err):
        return ERR_LOOKUP
    return decide_shared_contracted_one(
        cand, xs, t, codes, bound, active, features, mu, a_inv, v, link, z, rule, ucb_alpha,
        eps, joint, l_buf, def_i, def_f, allowed, eta, backstop, surplus, arm_group, n_obs,
        first_seen, st_f, st_i, ring, member, before, rng_state, pos_of_arm, best, arg, w_buf,
        pp_buf, mean_buf, sd_buf, p, out, err,
    )  # fmt: skip


@njit(cache=True, nogil=True)
def learn_shared_one(
    arm, reward, xs, features, gamma, lam, g, h, mu, a_inv, phi, u, clock, n_obs, pending,
    refresh_every, model_dirty,
):  # fmt: skip
    """One checked outcome: :func:`.shared_linear.update_shared_batch` on a batch of one,
    then the counters a policy keeps per update.

    Parameters
    ----------
    arm : int, a registered arm; reward : float, checked; xs : float64 (1, d_ctx)
    features … clock : as :func:`.shared_linear.update_shared`
    n_obs : int64 (capacity,) observations per arm; pending : int64 (1,) updates since
    the last refresh; refresh_every : int; model_dirty : bool (1,) set (the posterior
    needs a re-solve)

    Returns
    -------
    bool
        True when a refresh is due (``pending`` reached ``refresh_every``).
    """
    update_shared(features[arm], xs[0], reward, gamma, lam, g, h, mu, a_inv, phi, u, clock)
    model_dirty[0] = True
    n_obs[arm] += 1
    pending[0] += 1
    return pending[0] >= refresh_every
