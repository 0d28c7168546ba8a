"""The decision pipeline shared by every family: check → (family scores → rule) → ε-mix →
contracts → draw, over a CSR batch of requests.

A family's decide kernel checks the batch with :func:`check_requests`, fills each request's
base probabilities (its own scores and rule), and hands them to :func:`finish`. One request
is a batch of one, so the single and batch entries make identical decisions from the same
stream. The contract arguments (``def_i`` … ``before``) are those of
:func:`allocator.kernels.mixing.constrain_and_draw`; with no contract (``K = 0``) the
draw is the plain inverse-CDF draw, consuming the same one uniform.
"""

from numba import njit

from allocator.kernels.choice import (
    ERR_NONFINITE,
    ERR_TOO_MANY,
    OK,
    all_finite,
    clear_marks,
    draw_index,
    mark_candidates,
    mix_uniform,
)
from allocator.kernels.mixing import constrain_and_draw
from allocator.kernels.prefetch import prefetch


@njit(cache=True, nogil=True)
def check_requests(cand_ptr, cand_idx, xs, active, pos_of_arm, slots, err):
    """Check every request of a CSR batch before anything is decided.

    Parameters
    ----------
    cand_ptr : int64 (R+1,); cand_idx : int64 (nnz,) candidate arm indices
    xs : float64 (R, d) contexts (d may be 0)
    active : bool (capacity,); pos_of_arm : int64 (capacity,) scratch, all -1
    slots : int, most candidates a request may have
    err : int64 (2,) receives ``[request, candidate position]`` of the first error

    Returns
    -------
    int
        ``OK`` or a negative error code; no mark is left set either way.
    """
    for r in range(cand_ptr.shape[0] - 1):
        err[0] = r
        code = check_request(cand_idx[cand_ptr[r] : cand_ptr[r + 1]], xs[r], active,
                             pos_of_arm, slots, err)  # fmt: skip
        if code != OK:
            return code
    return OK


@njit(cache=True, nogil=True, inline="always")
def check_request(cand, x, active, pos_of_arm, slots, err):
    """One request of :func:`check_requests` (candidates ``cand`` (C,), context ``x``
    (d,)); ``err[1]`` receives the offending candidate position. Allocates nothing, so a
    loop deciding one request per call (a replay walk) pays no heap traffic for it."""
    err[1] = 0
    if not all_finite(x):
        return ERR_NONFINITE
    if cand.shape[0] > slots:
        return ERR_TOO_MANY
    code = mark_candidates(cand, active, pos_of_arm, err[1:])
    if code != OK:
        return code
    clear_marks(cand, cand.shape[0], pos_of_arm)
    return OK


@njit(cache=True, nogil=True)
def prefetch_request(cand_ptr, cand_idx, r, rows, contracts, arm_group, n_obs, first_seen):
    """Ask for the per-arm lines request ``r`` of a CSR batch will read (if there is one):
    its candidates' ``rows`` (the family's model state, (capacity, ...)) and, with
    ``contracts``, their group, observation count and first-seen time. Called a request
    ahead, so at 10^6 arms those misses overlap the current request's arithmetic instead
    of stalling the next one's first loops."""
    if r + 1 >= cand_ptr.shape[0]:
        return
    for k in range(cand_ptr[r], cand_ptr[r + 1]):
        a = cand_idx[k]
        prefetch(rows, a)
        if contracts:
            prefetch(arm_group, a)
            prefetch(n_obs, a)
            prefetch(first_seen, a)


@njit(cache=True, nogil=True)
def finish(
    p, n, cand, mu, eps, t, codes, draw, def_i, def_f, allowed, eta, backstop, surplus,
    arm_group, n_obs, first_seen, st_f, st_i, ring, member, before, rng_state,
):  # fmt: skip
    """ε-mix ``p[:n]``, then (with ``draw``) apply the contracts and draw one position.

    Parameters
    ----------
    p : float64 (>= n,) base probabilities in, final probabilities out
    cand : int64 (n,); mu : float64 (>= n,) posterior mean reward per candidate
    eps : float; t : float request time (epoch s); codes : int64 (A,) attribute codes
    draw : bool, False = only the ε-mixed policy probabilities (no contract, no draw)

    Returns
    -------
    (int, int, int)
        Chosen position, forcing constraint (-1 if none), bitmask of the constraints that
        moved mass.
    """
    mix_uniform(p, n, eps)
    if not draw:
        return 0, -1, 0
    if def_i.shape[0] == 0:
        return draw_index(p, n, rng_state), -1, 0
    return constrain_and_draw(
        p, n, cand, mu, t, codes, def_i, def_f, allowed, eta, backstop, surplus, arm_group,
        n_obs, first_seen, st_f, st_i, ring, member, before, rng_state,
    )  # fmt: skip
