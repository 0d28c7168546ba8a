"""Rejection replay walked in compiled code: the family's own decide (and update) kernel,
one logged round at a time, with no Python between rounds.

Each round is decided as a batch of one through the family's decide kernel (so its draw
consumes the decision stream exactly as a live ``decide`` would) and accepted when the
drawn arm is the logged one. A walk returns to Python only when Python has work to do: a
refresh (its bank draws use the policy's numpy ``Generator``), or, for a family whose
update is not compiled in here, the update itself. One kernel per decide kernel, since a
numba function taking another as an argument is not cached on disk.

``walk`` is ``(ptr, idx, pos, actions, rewards, xs, rows, taken)``: the log's CSR
candidates (int64 (n+1,), (nnz,)), the flat position of each logged action (int64 (n,)),
the logged arms (int64 (n,)), rewards (float64 (n,)), contexts (float64 (n, d), d may be
0), the rounds to walk in order (int64 (m,)) and the accepted rounds' output (int64 (m,)).
``one`` is ``(ptr1, t1, codes1, chosen)``: the one-request batch's pointer (int64 (2,)),
time (float64 (1,)), attribute codes (int64 (1, 0)) and chosen-position output (the
``chosen`` array inside ``rest``). ``rest`` is the decide kernel's arguments after
``draw`` (``Policy.kernel_args``). ``learn`` is ``(n_obs, pending, refresh_every)`` of
the policy state.

Every walk returns ``(rounds consumed, rounds accepted, status)``; status is ``OK`` or
the decide kernel's error code (inputs are checked before a walk, so it stays ``OK``).
"""

from numba import njit

from allocator.kernels.choice import OK
from allocator.kernels.hybrid import decide_hybrid
from allocator.kernels.linear import decide_linear, update_linear_batch
from allocator.kernels.logistic import update_logistic_batch, update_shared_logistic_batch
from allocator.kernels.per_arm import decide_per_arm
from allocator.kernels.shared_linear import decide_shared, update_shared_batch

#: which compiled update a contextual walk applies (``UPDATE_NONE``: Python updates)
UPDATE_NONE, UPDATE_GAUSSIAN, UPDATE_LOGISTIC = 0, 1, 2


@njit(cache=True, nogil=True)
def _open(walk, one, k):
    """Round ``rows[k]``: set the one-request pointer; return the round and its offset."""
    ptr, rows = walk[0], walk[6]
    r = rows[k]
    lo = ptr[r]
    one[0][1] = ptr[r + 1] - lo
    return r, lo


@njit(cache=True, nogil=True)
def _accepted(walk, one, r, lo, taken):
    """Whether the drawn candidate of round ``r`` is the logged one (then recorded)."""
    if lo + one[3][0] != walk[2][r]:
        return False
    walk[7][taken] = r
    return True


@njit(cache=True, nogil=True)
def _learned(walk, learn, r):
    """Count round ``r``'s observation; whether the policy now needs its refresh."""
    n_obs, pending, refresh_every = learn
    n_obs[walk[3][r]] += 1
    pending[0] += 1
    return pending[0] >= refresh_every


@njit(cache=True, nogil=True)
def _decide(walk, one, r, lo, per_arm, linear, shared, hybrid):
    """Decide round ``r`` with the one decide kernel whose arguments are given (the
    others are None: numba prunes their branches, so each family compiles alone)."""
    cand = walk[1][lo : walk[0][r + 1]]
    x = walk[5][r : r + 1]
    code = OK
    if per_arm is not None:
        code = decide_per_arm(one[0], cand, x, one[1], one[2], True, *per_arm)
    if linear is not None:
        code = decide_linear(one[0], cand, x, one[1], one[2], True, *linear)
    if shared is not None:
        code = decide_shared(one[0], cand, x, one[1], one[2], True, *shared)
    if hybrid is not None:
        code = decide_hybrid(one[0], cand, x, one[1], one[2], True, *hybrid)
    return code


@njit(cache=True, nogil=True)
def _update(walk, r, update, linear, shared):
    """Fold accepted round ``r`` in with the family's update kernel (``linear``: the
    disjoint kernels' arguments after the rewards; ``shared``: the arm features, those
    arguments, then the model's ``model_dirty`` flag, set here)."""
    s = slice(r, r + 1)
    arms, xs, rewards = walk[3][s], walk[5][s], walk[4][s]
    if linear is not None:
        if update == UPDATE_GAUSSIAN:
            update_linear_batch(arms, xs, rewards, *linear)
        elif update == UPDATE_LOGISTIC:
            update_logistic_batch(arms, xs, rewards, *linear)
    if shared is not None:
        f, tail = shared[0], shared[1:-1]
        if update == UPDATE_GAUSSIAN:
            update_shared_batch(f, arms, xs, rewards, *tail)
        elif update == UPDATE_LOGISTIC:
            update_shared_logistic_batch(f, arms, xs, rewards, *tail)
        shared[-1][0] = True


@njit(cache=True, nogil=True)
def walk_rounds(walk, one, start, stop_after, decide, update, uargs, learn):
    """Walk ``rows[start:]`` until ``stop_after`` acceptances (0: no limit) or, when
    ``update`` is compiled in, until an accepted round makes a refresh due.

    ``decide`` is ``(per_arm, linear, shared, hybrid)``: the arguments after ``draw`` of
    the family's decide kernel in its slot, None in the others. ``update`` is
    ``UPDATE_NONE`` (Python folds the accepted rounds in) or the family's update kernel
    (``UPDATE_GAUSSIAN``, ``UPDATE_LOGISTIC``) with ``uargs`` = ``(linear, shared)``, its
    arguments in the slot of its model (see :func:`_update`), None in the other.
    """
    taken = 0
    for k in range(start, walk[6].shape[0]):
        r, lo = _open(walk, one, k)
        code = _decide(walk, one, r, lo, decide[0], decide[1], decide[2], decide[3])
        if code != OK:
            return k, taken, code
        if _accepted(walk, one, r, lo, taken):
            taken += 1
            if update != UPDATE_NONE:
                _update(walk, r, update, uargs[0], uargs[1])
                if _learned(walk, learn, r):
                    return k + 1, taken, OK
            if taken == stop_after:
                return k + 1, taken, OK
    return walk[6].shape[0], taken, OK
