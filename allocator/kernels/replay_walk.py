"""Replay walked in compiled code: the family's own decide (and update) kernel, one
logged round at a time, with no Python between rounds.

Each round is decided as a batch of one through the family's decide kernel: rejection
replay draws (consuming the decision stream exactly as a live ``decide`` would) and
accepts the round when the drawn arm is the logged one; nonstationary replay computes the
probabilities without a draw and accepts by its acceptance rule. A walk returns to Python
only when Python has work to do: a refresh (its bank draws use the policy's numpy
``Generator``), or the update of a family whose decisions move only at refreshes (folded
in by ``update_batch``, or ``learn_outcomes`` for the factored value family, just before
the refresh it brings). The decide kernel is chosen by which argument slot is filled, not
passed as a function: a numba function taking another as an argument is not cached on
disk, and every process would compile it again.

The per-round steps (:func:`_decide`, the linear family's one-request entry, the
acceptance rule, and an accepted round's :func:`_take`) are inlined into the walk at
numba's level: a compiled call takes an atomic reference count on every array it is
passed, on entry and on exit, and ~70 of them per round were a quarter of a linear walk's
time. Inlining needs the decide and update slots to be the walk's own arguments (numba
prunes the empty slots' branches only there) and calls without a starred argument.

``walk`` is ``(ptr, idx, pos, actions, rewards, xs, rows, taken)``: the log's CSR
candidates (int64 (n+1,), (nnz,)), the flat position of each logged action (int64 (n,)),
the logged arms (int64 (n,)), rewards (float64 (n,)), contexts (float64 (n, d), d may be
0), the rounds to walk in order (int64 (m,)) and the accepted rounds' output (int64 (m,)).
``one`` is ``(ptr1, t1, codes1, chosen, probs, stream, last)``: the one-request batch's
pointer (int64 (2,)), time (float64 (1,)), attribute codes (int64 (1, 0)), and the
chosen-position output, probabilities output and decision stream that are also among the
decide arguments, plus the offset and length of the last decided list (int64 (2,)).
``learn`` is ``(n_obs, pending, refresh_every)`` of the policy state.

Every walk returns ``(rows consumed, rounds accepted, status)``; status is ``OK`` or the
decide kernel's error code (inputs are checked before a walk, so it stays ``OK``).
"""

from numba import njit

from allocator.kernels.beta import update_beta_batch
from allocator.kernels.beta_bank import refresh_beta_bank
from allocator.kernels.choice import OK, draw_index
from allocator.kernels.factored import decide_factored
from allocator.kernels.hybrid import decide_hybrid
from allocator.kernels.linear import decide_linear_one, update_linear_batch
from allocator.kernels.linear_refresh import refresh_linear_walk
from allocator.kernels.logistic import update_logistic_batch, update_shared_logistic_batch
from allocator.kernels.nonstationary import accept_event
from allocator.kernels.per_arm import decide_per_arm
from allocator.kernels.shared_linear import decide_shared, update_shared_batch

#: which compiled update a walk applies (``UPDATE_NONE``: Python updates); Beta's
#: updates do not move its decisions (they read the refreshed bank), the others' do
UPDATE_NONE, UPDATE_GAUSSIAN, UPDATE_LOGISTIC, UPDATE_BETA = 0, 1, 2, 3


@njit(cache=True, nogil=True, inline="always")
def _take(walk, one, r, taken, stop_after, update, up_linear, up_shared, up_beta, bank,
          scratch, posteriors, learn):  # fmt: skip
    """Record accepted round ``r`` and fold it in when ``update`` is compiled in; returns
    the acceptances so far and whether the walk must stop (a refresh due that is not
    compiled in, or ``stop_after`` reached). ``bank`` and ``scratch`` are the arguments of
    :func:`allocator.kernels.beta_bank.refresh_beta_bank` before and after ``pending``
    (a Beta–Bernoulli refresh compiled in), or None; ``posteriors`` those of
    :func:`allocator.kernels.linear_refresh.refresh_linear_walk` before ``pending`` (a
    disjoint linear refresh compiled in), or None."""
    walk[7][taken] = r
    taken += 1
    if update != UPDATE_NONE:
        _update(walk, r, update, up_linear, up_shared, up_beta)
        if update != UPDATE_BETA:
            one[6][1] = -1
        if _learned(walk, learn, r):
            if not _refreshed(learn, bank, scratch, posteriors):
                return taken, True
            one[6][1] = -1  # the bank was redrawn
    return taken, taken == stop_after


@njit(cache=True, nogil=True, inline="always")
def _refreshed(learn, bank, scratch, posteriors):
    """Refresh the policy in place when its refresh is compiled in: a Beta–Bernoulli bank
    (``bank``, and ``scratch`` after ``pending``) or disjoint linear posteriors and score
    bank (``posteriors``); whether it was (else Python refreshes)."""
    if bank is not None:
        refresh_beta_bank(*bank, learn[1], *scratch)
        return True
    if posteriors is not None:
        refresh_linear_walk(*posteriors, learn[1])
        return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _learned(walk, learn, r):
    """Count round ``r``'s observation; whether the policy now needs its refresh."""
    n_obs, pending, refresh_every = learn
    n_obs[walk[3][r]] += 1
    pending[0] += 1
    return pending[0] >= refresh_every


@njit(cache=True, nogil=True, inline="always")
def _reused(idx, xs, last, probs, stream, chosen, lo, n, draw):
    """Whether a context-free round with candidates ``idx[lo:lo + n]`` repeats the last
    decided round's list (``last``: its offset and length): its probabilities ``probs``
    are then still the answer, the model being unchanged since (any update clears
    ``last``), and only the draw is left to make (what the decide kernel would do again,
    without contracts). The walks ask only for context-free logs (``xs`` (n, 0)): a
    contextual round's answer is always no."""
    if last[1] != n:
        return False
    for j in range(n):
        if idx[lo + j] != idx[last[0] + j]:
            return False
    if draw:
        chosen[0] = draw_index(probs, n, stream)
    return True


@njit(cache=True, nogil=True, inline="always")
def _decide(walk, one, k, draw, per_arm, linear, shared, hybrid, factored):
    """Decide round ``r = rows[k]`` with the one decide kernel whose arguments are given
    (the others are None: numba prunes their branches, so each family compiles alone;
    the disjoint linear family's is its one-request entry, ``decide_linear_one``);
    returns ``r``, its offset in the candidates and the kernel's status."""
    ptr = walk[0]
    r = walk[6][k]
    lo = ptr[r]
    n = ptr[r + 1] - lo
    one[0][1] = n
    cand = walk[1][lo : lo + n]
    code = OK
    if per_arm is not None:
        code = decide_per_arm(one[0], cand, walk[5][r : r + 1], one[1], one[2], draw, *per_arm)
    if linear is not None:
        # spelled out, not ``*linear``: numba inlines no call with a starred argument
        (active, pos_of_arm, err, mu, a_inv, v, z, rule, ucb_alpha, eps, rng_state, best,
         arg, mean_buf, sd_buf, p_out) = linear  # fmt: skip
        code, one[3][0] = decide_linear_one(
            cand, walk[5][r], draw, active, pos_of_arm, err, mu, a_inv, v, z, rule,
            ucb_alpha, eps, rng_state, best, arg, mean_buf, sd_buf, p_out,
        )  # fmt: skip
    if shared is not None:
        code = decide_shared(one[0], cand, walk[5][r : r + 1], one[1], one[2], draw, *shared)
    if hybrid is not None:
        code = decide_hybrid(one[0], cand, walk[5][r : r + 1], one[1], one[2], draw, *hybrid)
    if factored is not None:
        code = decide_factored(
            one[0], cand, walk[5][r : r + 1], one[1], one[2], draw, *factored
        )  # fmt: skip
    one[6][0] = lo
    one[6][1] = n
    return r, lo, code


@njit(cache=True, nogil=True, inline="always")
def _update(walk, r, update, linear, shared, beta):
    """Fold accepted round ``r`` in with the family's update kernel (``linear``: the
    disjoint kernels' arguments after the rewards; ``shared``: the arm features, those
    arguments, then the model's ``model_dirty`` flag, set here; ``beta``: the arguments
    of :func:`allocator.kernels.beta.update_beta_batch` after the rewards)."""
    s = slice(r, r + 1)
    arms, xs, rewards = walk[3][s], walk[5][s], walk[4][s]
    if beta is not None:
        update_beta_batch(arms, rewards, *beta)
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
def walk_rounds(
    walk, one, start, stop_after, per_arm, linear, shared, hybrid, factored, update, up_linear,
    up_shared, up_beta, bank, scratch, posteriors, learn,
):  # fmt: skip
    """Walk ``rows[start:]`` until ``stop_after`` acceptances (0: no limit) or, when
    ``update`` is compiled in, until an accepted round makes a refresh due that is not
    compiled in too.

    ``per_arm``, ``linear``, ``shared``, ``hybrid``, ``factored``: the arguments after
    ``draw`` of the family's decide kernel (``decide_linear_one`` for the linear slot) in
    its slot, None in the others. ``update`` is ``UPDATE_NONE`` (Python folds the accepted
    rounds in) or the family's update kernel (``UPDATE_GAUSSIAN``, ``UPDATE_LOGISTIC``,
    ``UPDATE_BETA``) with its arguments in the slot of its model, ``up_linear``,
    ``up_shared`` or ``up_beta`` (see :func:`_update`), None in the others; ``bank`` and
    ``scratch`` compile a Beta–Bernoulli refresh in, ``posteriors`` a disjoint linear one
    (see :func:`_take`), or are None.
    """
    ptr, idx, xs, rows = walk[0], walk[1], walk[5], walk[6]
    chosen, probs, stream, last = one[3], one[4], one[5], one[6]
    last[1] = -1
    taken = 0
    for k in range(start, rows.shape[0]):
        r = rows[k]
        lo = ptr[r]
        n = ptr[r + 1] - lo
        if xs.shape[1] != 0 or not _reused(idx, xs, last, probs, stream, chosen, lo, n, True):
            r, lo, code = _decide(walk, one, k, True, per_arm, linear, shared, hybrid, factored)
            if code != OK:
                return k, taken, code
        if lo + one[3][0] == walk[2][r]:  # the drawn candidate is the logged one
            taken, done = _take(
                walk, one, r, taken, stop_after, update, up_linear, up_shared, up_beta, bank,
                scratch, posteriors, learn,
            )  # fmt: skip
            if done:
                return k + 1, taken, OK
    return walk[6].shape[0], taken, OK


@njit(cache=True, nogil=True)
def walk_events(
    walk, one, start, stop_after, per_arm, linear, shared, hybrid, factored, update, up_linear,
    up_shared, up_beta, bank, scratch, posteriors, learn, events,
):  # fmt: skip
    """Nonstationary replay's walk: :func:`walk_rounds` where each event's probabilities
    are computed without a draw (``target`` receives them) and the event is accepted by
    :func:`allocator.kernels.nonstationary.accept_event`.

    ``events`` is ``(p, u, adaptive, q, c_max, hist, state, c_out, accepted, target)``:
    the logged propensity and a uniform draw per round (float64 (n,)), the arguments of
    :func:`allocator.kernels.nonstationary.accept_event`, the ``c`` and acceptance of
    every round (float64 and bool (n,), outputs) and the target probability of every
    candidate (float64 (nnz,), output).
    """
    p, u, adaptive, q, c_max, hist, state, c_out, accepted, target = events
    ptr, idx, xs, rows = walk[0], walk[1], walk[5], walk[6]
    chosen, probs, stream, last = one[3], one[4], one[5], one[6]
    last[1] = -1
    taken = 0
    for k in range(start, rows.shape[0]):
        r = rows[k]
        lo = ptr[r]
        n = ptr[r + 1] - lo
        if xs.shape[1] != 0 or not _reused(idx, xs, last, probs, stream, chosen, lo, n, False):
            r, lo, code = _decide(walk, one, k, False, per_arm, linear, shared, hybrid, factored)
            if code != OK:
                return k, taken, code
        for j in range(n):  # not a slice assignment: views cost reference counts
            target[lo + j] = probs[j]
        d = probs[walk[2][r] - lo]
        accepted[r] = accept_event(d, p[r], u[r], adaptive, q, c_max, hist, state, c_out, r)
        if accepted[r]:
            taken, done = _take(
                walk, one, r, taken, stop_after, update, up_linear, up_shared, up_beta, bank,
                scratch, posteriors, learn,
            )  # fmt: skip
            if done:
                return k + 1, taken, OK
    return walk[6].shape[0], taken, OK
