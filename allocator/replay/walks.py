"""Which compiled replay walk a policy runs, and the Python work between its calls.

A walk (:mod:`allocator.kernels.replay_walk`) decides logged rounds one by one with the
family's own decide kernel and returns only when Python must act: a refresh (bank draws
come from the policy's numpy ``Generator``) or an update this module does not compile in.
Families whose decisions move on every update (disjoint and shared linear / logistic) are
updated inside the walk by their own update kernels, and so is Beta–Bernoulli (its
updates move nothing until the refresh that ends the call, and with at most
:data:`allocator.kernels.beta_bank.MAX_ARMS` arms that refresh is compiled in too, drawing
from the policy's own ``Generator``: such a walk runs to its end in one call). The disjoint
linear and logistic (without refits) families' refresh is compiled in as well
(:mod:`allocator.kernels.linear_refresh`: the policy's own re-solve kernel and score-bank
draws), so their walks also run to the end in one call. The others (Normal–Gamma, hybrid)
decide from refreshed arrays only, so their accepted rounds are folded in by
``update_batch`` just before the refresh they bring. The factored value family learns the
logged events (click, order, gmv), not the reward: its walk stops at every acceptance and
the round is folded in by its own ``learn_outcomes``. Either way every round is decided
from exactly the state, and the stream position, a round-by-round replay would use.
"""

from __future__ import annotations

from inspect import signature
from typing import Any

import numpy as np

from allocator.errors import InvalidInputError
from allocator.kernels import beta as kb
from allocator.kernels import beta_bank as kbb
from allocator.kernels import choice as ck
from allocator.kernels import factored as kf
from allocator.kernels import hybrid as kh
from allocator.kernels import linear as kl
from allocator.kernels import logistic as klg
from allocator.kernels import per_arm as kpa
from allocator.kernels import replay_walk as kw
from allocator.kernels import shared_linear as ksl
from allocator.kernels.entry import entry_point
from allocator.policies.base import Policy
from allocator.replay.dataset import I64

#: decide kernel -> its slot among the walk's decide arguments
_SLOTS = {
    kpa.decide_per_arm: 0, kl.decide_linear: 1, ksl.decide_shared: 2, kh.decide_hybrid: 3,
    kf.decide_factored: 4,
}  # fmt: skip
#: the one-request entry a walk calls instead of a family's batch decide kernel
_ONE = {kl.decide_linear: kl.decide_linear_one}
#: a family's sequential update kernel -> the walk's compiled-update code
_UPDATES = {
    kl.update_linear_batch: kw.UPDATE_GAUSSIAN,
    klg.update_logistic_batch: kw.UPDATE_LOGISTIC,
    ksl.update_shared_batch: kw.UPDATE_GAUSSIAN,
    klg.update_shared_logistic_batch: kw.UPDATE_LOGISTIC,
}
#: a family whose updates leave its decisions alone, by its one-observation learning
#: kernel -> the walk's compiled-update code (its rounds are folded in inside the walk too)
_STILL_UPDATES = {kb.learn_beta_one: kw.UPDATE_BETA}


class Walker:
    """Compiled replay walks of one learning ``policy`` over checked rounds."""

    def __init__(self, policy: Policy) -> None:
        kernel = type(policy).KERNEL
        if kernel not in _SLOTS:
            raise InvalidInputError(f"no compiled replay walk for {type(policy).__name__}")
        self.policy = policy
        self.slot = _SLOTS[kernel]
        # the hybrid family shares the shared model's update but decides from refreshes only
        moving = policy.UPDATES_MOVE_DECISIONS
        update = getattr(policy, "UPDATE", None)  # a logistic refit swaps it per instance
        self.update = _UPDATES.get(update, kw.UPDATE_NONE) if moving else kw.UPDATE_NONE
        if policy.LEARNS_EVENTS:  # its UPDATE (inherited) learns rewards: Python folds in
            self.update = kw.UPDATE_NONE
        elif not moving:
            self.update = _STILL_UPDATES.get(type(policy).LEARN_ONE, kw.UPDATE_NONE)
        self.ptr1 = np.zeros(2, dtype=np.int64)
        self.t1 = np.zeros(1)
        self.codes1 = np.zeros((1, 0), dtype=np.int64)
        self.out = np.zeros((3, 1), dtype=np.int64)
        self.probs = np.zeros(1)
        self.names: tuple[str, ...] = _parameters(kernel)
        one = _ONE.get(kernel)
        # the one-request entry's arguments after ``draw``, by name among the kernel's
        self.one_names = None if one is None else _parameters(one)[3:]

    def _decide_args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The walk's ``decide`` slot from the batch kernel's full argument list."""
        if self.one_names is None:
            return args[6:]
        named = dict(zip(self.names, args, strict=True))
        return tuple(named[name] for name in self.one_names)

    def _uargs(self) -> tuple[Any, ...]:
        """The compiled update's arguments after the rewards in its model's slot (own
        scratch buffers), None in the others (see ``kernels.replay_walk._update``), then
        those of a compiled Beta–Bernoulli refresh (or None, None) and of a compiled
        disjoint linear one (or None)."""
        p: Any = self.policy
        s = p.state
        if self.update == kw.UPDATE_NONE:
            return None, None, None, None, None, None
        n = p.registry.n_arms
        if self.update == kw.UPDATE_BETA:
            beta = (p.gamma, s.clock, s.t_last, s.s1, s.s0, s.dirty)
            if n > kbb.MAX_ARMS:
                return None, None, beta, None, None, None
            bank = (p.rng, n, *beta[:5], s.a0, s.b0, s.dirty, s.bank, s.winner, s.mean, s.sd)
            scratch = (s.version, np.empty(n, dtype=np.int64), np.empty(n), np.empty(n),
                       np.empty((n, s.bank.shape[1])))  # fmt: skip
            return None, None, beta, bank, scratch, None
        if self.slot == _SLOTS[kl.decide_linear]:
            d = s.mu.shape[1]
            work = np.zeros((2 * d + 2, d))
            linear = (p.gamma, p.lam, s.clock, s.t_last, s.g, s.h, s.count, s.mu0, s.mu,
                      s.a_inv, work, s.dirty)  # fmt: skip
            posteriors = None
            if getattr(p, "REFRESH", None) is kl.refresh_linear:
                posteriors = (p.rng, n, p.gamma, p.lam, s.clock, s.t_last, s.g, s.h, s.mu0,
                              s.mu, s.a_inv, s.dirty, np.zeros((2 * d + 1, d)), s.z,
                              p.bank_slots, s.z_cursor, np.empty(n, dtype=np.int64),
                              s.version)  # fmt: skip
            return linear, None, None, None, None, posteriors
        dim = s.mu.shape[0]
        return None, (s.features, p.gamma, p.lam, s.g, s.h, s.mu, s.a_inv, np.empty(dim),
                      np.empty(dim), s.clock, s.model_dirty), None, None, None, None  # fmt: skip

    def rounds(
        self, ptr: I64, idx: I64, pos: I64, actions: I64, rewards: np.ndarray,
        xs: np.ndarray, rows: I64, outcomes: np.ndarray | None = None,
    ) -> I64:  # fmt: skip
        """Rejection replay of ``rows`` (in order) of the checked chunk: the accepted
        rounds, taught (from ``outcomes`` (n, 3) when the policy learns events)."""
        walk = (ptr, idx, pos, actions, rewards, xs, rows, np.empty_like(rows))
        accepted, _ = self._run(kw.walk_rounds, walk, (), None, outcomes)
        return accepted

    def events(
        self, ptr: I64, idx: I64, pos: I64, actions: I64, rewards: np.ndarray,
        xs: np.ndarray, events: tuple[Any, ...], max_accepted: int | None,
        outcomes: np.ndarray | None = None,
    ) -> int:  # fmt: skip
        """Nonstationary replay of the checked log from its first round (``events`` as
        :func:`allocator.kernels.replay_walk.walk_events` takes them) until its end or
        ``max_accepted`` acceptances; the rounds walked."""
        rows = np.arange(actions.shape[0], dtype=np.int64)
        walk = (ptr, idx, pos, actions, rewards, xs, rows, np.empty_like(rows))
        return self._run(kw.walk_events, walk, events, max_accepted, outcomes)[1]

    def _run(
        self, kernel: Any, walk: tuple[Any, ...], events: tuple[Any, ...],
        max_accepted: int | None, outcomes: np.ndarray | None,
    ) -> tuple[I64, int]:  # fmt: skip
        """Call ``kernel`` until the walk's rows or ``max_accepted`` run out, folding in
        and refreshing between calls; the accepted rows and the rows walked."""
        policy = self.policy
        if policy.registry.n_arms != int(policy.state.n_synced[0]):
            raise InvalidInputError("the registry has arms this policy has no state for")
        ptr, idx, actions, rewards, xs, rows, taken = (walk[i] for i in (0, 1, 3, 4, 5, 6, 7))
        width = int(np.diff(ptr).max(initial=1))
        if self.probs.shape[0] < width:
            self.probs = np.zeros(width)
        tail = (events,) if events else ()
        last = np.full(2, -1, dtype=np.int64)
        one = (self.ptr1, self.t1, self.codes1, self.out[0], self.probs, policy.state.stream, last)
        refresh_every = int(policy.config.refresh_every)
        learn = (policy.state.n_obs, policy.state.pending, refresh_every)
        contextual = policy.n_features is not None
        accepted: list[I64] = []
        start = n_taken = 0
        key: Any = None
        while start < rows.shape[0] and (max_accepted is None or n_taken < max_accepted):
            # the argument lists hold the state's arrays: rebuilt, and the compiled entry
            # rebound, only when one was reallocated (refreshes write in place)
            if key != (policy.state.generation, policy.registry.generation):
                key = (policy.state.generation, policy.registry.generation)
                self.ptr1[1] = width
                args = policy.kernel_args(self.ptr1, idx[:width], xs[:1], self.t1,
                                          self.codes1, True, None, self.probs,
                                          self.out)  # fmt: skip
                decide: list[Any] = [None] * len(set(_SLOTS.values()))
                decide[self.slot] = self._decide_args(args)
                call = (*decide, self.update, *self._uargs(), learn, *tail)
                entry = entry_point(kernel, (walk, one, start, 0, *call))
            if self.update != kw.UPDATE_NONE:  # stop 0: only when a refresh is due
                stop = 0
            elif policy.UPDATES_MOVE_DECISIONS:
                stop = 1
            else:
                stop = refresh_every - policy.pending_updates
            if max_accepted is not None:
                left = max_accepted - n_taken
                stop = left if stop == 0 else min(stop, left)
            start, n, code = entry(walk, one, start, stop, *call)
            if code != ck.OK:
                raise InvalidInputError(f"logged round {int(rows[start])} cannot be decided")
            got = taken[:n].copy()
            accepted.append(got)
            n_taken += n
            if self.update != kw.UPDATE_NONE:
                if policy.pending_updates >= refresh_every:
                    policy.refresh()
            elif n:
                learn_rounds(policy, got, actions, rewards, xs if contextual else None, outcomes)
        got_all = np.concatenate(accepted) if accepted else np.zeros(0, dtype=np.int64)
        return got_all, int(start)


def learn_rounds(
    policy: Policy, rows: I64, actions: I64, rewards: np.ndarray, xs: np.ndarray | None,
    outcomes: np.ndarray | None,
) -> None:  # fmt: skip
    """Teach ``policy`` the logged ``rows``: their events (click, order, gmv) when it learns
    events (checked present by :func:`allocator.replay.rejection.check_replay_inputs`),
    their rewards otherwise."""
    x = None if xs is None else xs[rows]
    if policy.LEARNS_EVENTS and outcomes is not None:
        ev = outcomes[rows]
        policy.learn_outcomes(actions[rows], ev[:, 0], ev[:, 1], ev[:, 2], rewards[rows], x)
    else:
        policy.update_batch(actions[rows], rewards[rows], x)


def _parameters(kernel: Any) -> tuple[str, ...]:
    """A kernel's parameter names (its Python function's: a dispatcher, or the plain function
    itself when the JIT is off)."""
    return tuple(signature(getattr(kernel, "py_func", kernel)).parameters)
