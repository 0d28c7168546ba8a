"""Which compiled rejection walk a policy runs, and the Python work between its calls.

A walk (:mod:`allocator.kernels.replay_walk`) decides logged rounds one by one with the
family's own decide kernel and returns only when Python must act: a refresh (bank draws
come from the policy's numpy ``Generator``) or an update this module does not compile in.
Families whose decisions move on every update (disjoint and shared linear / logistic) are
updated inside the walk by their own update kernels; the others (per-arm banks, hybrid)
decide from refreshed arrays only, so their accepted rounds are folded in by
``update_batch`` just before the refresh they bring. Either way every round is decided
from exactly the state, and the stream position, a round-by-round replay would use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from allocator.errors import InvalidInputError
from allocator.kernels import choice as ck
from allocator.kernels import hybrid as kh
from allocator.kernels import linear as kl
from allocator.kernels import logistic as klg
from allocator.kernels import per_arm as kpa
from allocator.kernels import replay_walk as kw
from allocator.kernels import shared_linear as ksl
from allocator.policies.base import Policy
from allocator.replay.dataset import I64

#: decide kernel -> its slot in the walk's ``decide`` tuple
_SLOTS = {kpa.decide_per_arm: 0, kl.decide_linear: 1, ksl.decide_shared: 2, kh.decide_hybrid: 3}
#: a family's sequential update kernel -> the walk's compiled-update code
_UPDATES = {
    kl.update_linear_batch: kw.UPDATE_GAUSSIAN,
    klg.update_logistic_batch: kw.UPDATE_LOGISTIC,
    ksl.update_shared_batch: kw.UPDATE_GAUSSIAN,
    klg.update_shared_logistic_batch: kw.UPDATE_LOGISTIC,
}


class RejectionWalker:
    """Rejection replay of one learning ``policy`` over checked rounds, chunk by chunk."""

    def __init__(self, policy: Policy) -> None:
        kernel = type(policy).KERNEL
        if kernel not in _SLOTS:
            raise InvalidInputError(f"no compiled replay walk for {type(policy).__name__}")
        self.policy = policy
        self.slot = _SLOTS[kernel]
        # the hybrid family shares the shared model's update but decides from refreshes only
        moving = policy.UPDATES_MOVE_DECISIONS
        update = getattr(type(policy), "UPDATE", None)
        self.update = _UPDATES.get(update, kw.UPDATE_NONE) if moving else kw.UPDATE_NONE
        self.ptr1 = np.zeros(2, dtype=np.int64)
        self.t1 = np.zeros(1)
        self.codes1 = np.zeros((1, 0), dtype=np.int64)
        self.out = np.zeros((3, 1), dtype=np.int64)
        self.probs = np.zeros(1)

    def _uargs(self) -> tuple[Any, Any]:
        """The compiled update's arguments after the rewards in its model's slot (own
        scratch buffers), None in the other (see ``kernels.replay_walk._update``)."""
        p: Any = self.policy
        s = p.state
        if self.update == kw.UPDATE_NONE:
            return None, None
        if self.slot == _SLOTS[kl.decide_linear]:
            d = s.mu.shape[1]
            work = np.zeros((2 * d + 2, d))
            return (p.gamma, p.lam, s.clock, s.t_last, s.g, s.h, s.count, s.mu0, s.mu,
                    s.a_inv, work, s.dirty), None  # fmt: skip
        dim = s.mu.shape[0]
        return None, (s.features, p.gamma, p.lam, s.g, s.h, s.mu, s.a_inv, np.empty(dim),
                      np.empty(dim), s.clock, s.model_dirty)  # fmt: skip

    def walk(
        self, ptr: I64, idx: I64, pos: I64, actions: I64, rewards: np.ndarray,
        xs: np.ndarray, rows: I64,
    ) -> I64:  # fmt: skip
        """Replay ``rows`` (in order) of the checked chunk; the accepted ones, taught."""
        policy = self.policy
        if policy.registry.n_arms != int(policy.state.n_synced[0]):
            raise InvalidInputError("the registry has arms this policy has no state for")
        width = int(np.diff(ptr).max(initial=1))
        if self.probs.shape[0] < width:
            self.probs = np.zeros(width)
        taken = np.empty(rows.shape[0], dtype=np.int64)
        walk = (ptr, idx, pos, actions, rewards, xs, rows, taken)
        one = (self.ptr1, self.t1, self.codes1, self.out[0])
        learn = (policy.state.n_obs, policy.state.pending, int(policy.config.refresh_every))
        contextual = policy.n_features is not None
        accepted: list[I64] = []
        start = 0
        while start < rows.shape[0]:
            self.ptr1[1] = width
            args = policy.kernel_args(self.ptr1, idx[:width], xs[:1], self.t1, self.codes1,
                                      True, None, self.probs, self.out)  # fmt: skip
            decide: list[Any] = [None] * 4
            decide[self.slot] = args[6:]
            if self.update != kw.UPDATE_NONE:  # stop 0: only when a refresh is due
                stop = 0
            elif policy.UPDATES_MOVE_DECISIONS:
                stop = 1
            else:
                stop = policy.config.refresh_every - policy.pending_updates
            start, n, code = kw.walk_rounds(
                walk, one, start, stop, tuple(decide), self.update, self._uargs(), learn
            )
            if code != ck.OK:
                raise InvalidInputError(f"logged round {int(rows[start])} cannot be decided")
            got = taken[:n].copy()
            accepted.append(got)
            if self.update != kw.UPDATE_NONE:
                if policy.pending_updates >= policy.config.refresh_every:
                    policy.refresh()
            elif n:
                policy.update_batch(actions[got], rewards[got], xs[got] if contextual else None)
        return np.concatenate(accepted) if accepted else np.zeros(0, dtype=np.int64)
