"""What every policy shares: seeding, input checks, refresh cadence and error mapping.

A policy owns its model arrays, densely indexed by the registry's arm indices. The
Python methods check and shape input, then make one kernel call; the kernels never
validate. Two random streams keep decisions reproducible and cheap to snapshot: the
decision stream is counter-based (two ``uint64`` words) and the bank stream is a numpy
``Generator`` used only when the posterior is refreshed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from allocator.errors import InvalidInputError, SnapshotError, UnknownArmError
from allocator.kernels import choice as ck
from allocator.registry import ArmRegistry

_CANDIDATE_ERRORS = {
    ck.ERR_EMPTY: (InvalidInputError, "candidates is empty: expected at least one arm"),
    ck.ERR_RANGE: (UnknownArmError, "is not a registered arm index"),
    ck.ERR_RETIRED: (UnknownArmError, "is a retired arm"),
    ck.ERR_DUPLICATE: (InvalidInputError, "appears twice in candidates"),
    ck.ERR_NONFINITE: (InvalidInputError, "context contains NaN or inf"),
    ck.ERR_TOO_MANY: (InvalidInputError, "too many candidates"),
}


class Choice(NamedTuple):
    """One decision: position in the candidate list, arm index, exact propensity."""

    position: int
    arm: int
    propensity: float


class BatchChoice(NamedTuple):
    """Decisions for R requests; ``probabilities`` is aligned with the CSR ``cand_idx``."""

    positions: np.ndarray
    arms: np.ndarray
    propensities: np.ndarray
    probabilities: np.ndarray


def as_index_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-d C-contiguous int64 array, or a typed error naming ``name``."""
    if type(values) is np.ndarray and values.dtype == np.int64 and values.ndim == 1:
        return values if values.flags.c_contiguous else np.ascontiguousarray(values)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-d, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must hold integer arm indices, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_float_array(values: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` as a finite float64 array of ``shape`` (-1 = any), or a typed error."""
    arr = values
    if not (type(arr) is np.ndarray and arr.dtype == np.float64 and arr.flags.c_contiguous):
        try:
            arr = np.ascontiguousarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{name} must be numeric, got {type(values).__name__}"
            ) from None
    if arr.ndim != len(shape) or any(
        s not in (-1, a) for s, a in zip(shape, arr.shape, strict=True)
    ):
        want = tuple("n" if s == -1 else s for s in shape)
        raise InvalidInputError(f"{name} has shape {arr.shape}, expected {want}")
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        where = ", ".join(map(str, bad))
        raise InvalidInputError(f"{name}[{where}] = {float(arr[bad])}: expected a finite number")
    return arr


class Policy(ABC):
    """Base class: a posterior family plus a rule (Thompson, UCB, greedy) and ε-mixing."""

    #: context length expected by ``decide`` (None = context-free model)
    n_features: int | None = None
    #: arrays that, with the meta fields, are the complete state (snapshots restore them)
    _state: tuple[str, ...] = ("_stream", "_clock", "_n_obs", "_dirty")
    #: learned sufficient statistics that add up across replicas (fleet deltas)
    _additive: tuple[str, ...] = ()
    #: arrays carried into a reconfigured policy: learned statistics and per-arm priors
    _learned: tuple[str, ...] = ("_n_obs",)
    _meta: tuple[str, ...] = ("_capacity", "_n_synced", "_pending", "version")
    #: rewards inside this range skip the (array-based) domain check on the scalar path
    _reward_lo: float = -math.inf
    _reward_hi: float = math.inf

    def __init__(self, config: Any, registry: ArmRegistry, seed: int) -> None:
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
        self.config = config
        self.registry = registry
        self._gamma = float(config.gamma)
        self._rule = config.rule_code
        self._eps = float(config.epsilon)
        self._ucb_alpha = float(config.ucb_alpha)
        bank_seq, stream_seq = np.random.SeedSequence(int(seed)).spawn(2)
        self._rng = np.random.Generator(np.random.PCG64(bank_seq))
        self._stream = np.array([stream_seq.generate_state(1, np.uint64)[0], 0], dtype=np.uint64)
        self._clock = np.zeros(1, dtype=np.int64)
        self._err = np.zeros(2, dtype=np.int64)
        self._capacity = 0
        self._n_synced = 0
        self._pending = 0
        self._pos_of_arm = np.empty(0, dtype=np.int64)
        self._dirty = np.empty(0, dtype=np.bool_)
        self._n_obs = np.empty(0, dtype=np.int64)
        self._p = np.empty(0, dtype=np.float64)
        self._last_n = 0
        self.version = 0
        self._delta_base: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- public API
    @property
    def clock(self) -> int:
        """Observations folded into the model so far (the forgetting clock)."""
        return int(self._clock[0])

    @property
    def n_observations(self) -> np.ndarray:
        """Raw (undiscounted) number of rewards folded in per arm (capacity,); read-only view."""
        view = self._n_obs.view()
        view.flags.writeable = False
        return view

    @property
    def probabilities(self) -> np.ndarray:
        """Choice probabilities over the last single request's candidates (a copy)."""
        return self._p[: self._last_n].copy()

    def decide(self, candidates: Any, context: Any = None) -> Choice:
        """Choose one of ``candidates`` (arm indices); return position, arm and propensity."""
        cand, pos = self.base_probabilities(candidates, context, draw=True)
        return Choice(pos, int(cand[pos]), float(self._p[pos]))

    def base_probabilities(
        self, candidates: Any, context: Any = None, draw: bool = False
    ) -> tuple[np.ndarray, int]:
        """Check a request and fill the policy's choice probabilities over its candidates.

        Returns the candidate array and, with ``draw``, the drawn position (else 0). The
        probabilities stay in an internal buffer until the next call (see
        :attr:`probabilities`); the constraint layer mixes them before its own draw.
        """
        cand = as_index_array(candidates, "candidates")
        if cand.shape[0] > self._p.shape[0]:
            self._ensure_scratch(cand.shape[0])
        x = self._context(context)
        pos = self._decide(cand, x, draw)
        if pos < 0:
            if pos == ck.ERR_NONFINITE:
                as_float_array(x, "context", (-1,))
            self._raise(pos, cand)
        self._last_n = cand.shape[0]
        return cand, pos

    def decide_batch(self, cand_ptr: Any, cand_idx: Any, contexts: Any = None) -> BatchChoice:
        """Decide for R requests given as CSR candidate lists (``cand_ptr`` has R+1 entries)."""
        ptr = as_index_array(cand_ptr, "cand_ptr")
        idx = as_index_array(cand_idx, "cand_idx")
        if ptr.shape[0] < 1 or ptr[0] != 0 or ptr[-1] != idx.shape[0] or (np.diff(ptr) < 0).any():
            raise InvalidInputError(
                "cand_ptr must start at 0, be non-decreasing and end at len(cand_idx) "
                f"= {idx.shape[0]}"
            )
        n_req = ptr.shape[0] - 1
        xs = self._contexts(contexts, n_req)
        self._ensure_scratch(int(np.diff(ptr).max(initial=1)))
        chosen = np.empty(n_req, dtype=np.int64)
        probs = np.empty(idx.shape[0], dtype=np.float64)
        code = self._decide_batch(ptr, idx, xs, probs, chosen)
        if code < 0:
            r, j = int(self._err[0]), int(self._err[1])
            self._raise(code, idx[ptr[r] : ptr[r + 1]], where=f"request {r}: ", pos=j)
        flat = ptr[:-1] + chosen
        return BatchChoice(chosen, idx[flat], probs[flat], probs)

    def update(self, arm: int, reward: float, context: Any = None) -> None:
        """Fold one observed reward for ``arm`` (with its context for contextual models)."""
        self._check_arm(arm)
        r = self._check_reward(reward, "reward")
        x = self._context(context)
        if not self._update(int(arm), r, x):
            as_float_array(x, "context", (-1,))
        self._n_obs[arm] += 1
        self._after_updates(1)

    def update_batch(self, arms: Any, rewards: Any, contexts: Any = None) -> None:
        """Fold many rewards in order; equivalent to calling :meth:`update` for each."""
        a = as_index_array(arms, "arms")
        r = as_float_array(rewards, "rewards", (a.shape[0],))
        bad = (a < 0) | (a >= self.registry.n_arms)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UnknownArmError(f"arms[{i}] = {a[i]} is not a registered arm index")
        self._check_rewards(r)
        xs = self._contexts(contexts, a.shape[0])
        self._update_batch(a, r, xs)
        np.add.at(self._n_obs, a, 1)
        self._after_updates(a.shape[0])

    def refresh(self) -> None:
        """Bring the posterior and the sample bank up to date with every update so far."""
        self._refresh()
        self._pending = 0
        self.version += 1

    def sync_arms(self, arm_features: Any = None) -> np.ndarray:
        """Allocate state for arms added to the registry since the last sync.

        New arms start from their group's prior (configured, or empirical: the group's
        current posterior means) and get bank samples at once, so they can be chosen
        immediately. Returns the indices of the new arms.
        """
        n = self.registry.n_arms
        new = np.arange(self._n_synced, n, dtype=np.int64)
        self._check_new_arm_features(new, arm_features)
        if self.registry.capacity > self._capacity:
            self._grow(self.registry.capacity)
            self._pos_of_arm = np.full(self._capacity, -1, dtype=np.int64)
            dirty = np.zeros(self._capacity, dtype=np.bool_)
            dirty[: self._dirty.shape[0]] = self._dirty
            self._dirty = dirty
            n_obs = np.zeros(self._capacity, dtype=np.int64)
            n_obs[: self._n_obs.shape[0]] = self._n_obs
            self._n_obs = n_obs
        if new.size:
            self._init_arms(new, arm_features)
            self._dirty[new] = True
            self._n_synced = n
            self._refresh()
        return new

    # ------------------------------------------------------ state, deltas, reload
    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Copies of every state array plus JSON-able meta (RNG state included)."""
        arrays = {name: np.array(getattr(self, name), copy=True) for name in self._state}
        meta = {name: getattr(self, name) for name in self._meta}
        meta["kind"] = self.config.kind
        meta["rng"] = self._rng.bit_generator.state
        return arrays, meta

    @classmethod
    def restore(
        cls, config: Any, registry: ArmRegistry, seed: int,
        arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
    ) -> Policy:  # fmt: skip
        """Rebuild a policy exactly as exported: it then makes the same decisions."""
        if meta.get("kind") != config.kind:
            raise SnapshotError(f"state is of kind {meta.get('kind')!r}, config is {config.kind!r}")
        policy = cls(config, ArmRegistry(), seed)
        policy.registry = registry
        for name in cls._state:
            current = getattr(policy, name)
            try:
                value = arrays[name]
            except KeyError:
                raise SnapshotError(f"state array {name!r} is missing") from None
            if value.dtype != current.dtype or value.ndim != current.ndim:
                raise SnapshotError(
                    f"state array {name!r} has dtype {value.dtype} and {value.ndim} dims, "
                    f"expected {current.dtype} and {current.ndim}"
                )
            setattr(policy, name, np.array(value, copy=True))
        for name in cls._meta:
            setattr(policy, name, meta[name])
        policy._rng.bit_generator.state = dict(meta["rng"])
        policy._pos_of_arm = np.full(policy._capacity, -1, dtype=np.int64)
        policy._after_restore()
        return policy

    def adopt_learned(self, other: Policy) -> None:
        """Take ``other``'s learned statistics (same arms), then refresh everything.

        Used by hot reload: hyper-parameters come from this policy's config, evidence from
        the running one. Arms that ``other`` never saw keep this policy's initial state.
        """
        other._settle()
        n = min(other.registry.n_arms, self.registry.n_arms)
        for name in self._learned:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine.shape[1:] != theirs.shape[1:]:
                raise InvalidInputError(f"cannot carry {name!r}: model dimensions changed")
            if name in self._per_model:
                mine[...] = theirs
            else:
                mine[:n] = theirs[:n]
        self._clock[0] = other._clock[0]
        if hasattr(self, "_t_last"):
            self._t_last[:n] = self._clock[0]
        self._dirty[:n] = True
        self._mark_model_dirty()
        self.refresh()

    def export_delta(self) -> dict[str, np.ndarray]:
        """What this replica learned since its previous export (sufficient statistics).

        Exact for the conjugate models without forgetting. With forgetting, statistics are
        first brought to this replica's clock and the learner folds the delta in as if it
        had been observed at its own clock: an approximation whose error shrinks with the
        export interval relative to the half-life.
        """
        self._settle()
        names = (*self._additive, "_n_obs")
        delta: dict[str, np.ndarray] = {}
        for name in names:
            current = np.array(getattr(self, name), copy=True)
            base = self._delta_base.get(name)
            diff = current.copy()
            if base is not None:
                if name in self._per_model:
                    diff -= base
                else:
                    diff[: base.shape[0]] -= base
            delta[name] = diff if name in self._per_model else diff[: self.registry.n_arms]
            self._delta_base[name] = current
        return delta

    def merge(self, delta: Mapping[str, np.ndarray]) -> None:
        """Fold a replica's :meth:`export_delta` into this policy, then refresh."""
        names = (*self._additive, "_n_obs")
        missing = [n for n in names if n not in delta]
        if missing:
            raise InvalidInputError(f"delta lacks {missing}: not from a {self.config.kind} policy")
        n_obs = np.asarray(delta["_n_obs"])
        if n_obs.ndim != 1 or n_obs.shape[0] > self.registry.n_arms:
            raise InvalidInputError(
                f"delta covers {n_obs.shape[0]} arms, this policy knows {self.registry.n_arms}"
            )
        k = n_obs.shape[0]
        for name in names:
            target, part = getattr(self, name), np.asarray(delta[name])
            want = target.shape if name in self._per_model else (k, *target.shape[1:])
            if part.shape != want:
                raise InvalidInputError(f"delta[{name!r}] has shape {part.shape}, expected {want}")
        self._settle()
        for name in names:
            target = getattr(self, name)
            if name in self._per_model:
                target += delta[name]
            else:
                target[:k] += delta[name]
        self._clock[0] += int(n_obs.sum())
        if hasattr(self, "_t_last"):
            self._t_last[:k] = self._clock[0]
        self._dirty[:k] |= n_obs > 0
        self._mark_model_dirty()
        self.refresh()

    #: learned arrays that belong to the whole model rather than to one arm
    _per_model: frozenset[str] = frozenset()

    def _settle(self) -> None:
        """Apply pending lazy forgetting so stored statistics are effective at the clock."""
        if self._gamma == 1.0 or not hasattr(self, "_t_last"):
            return
        n = self.registry.n_arms
        w = self._gamma ** (self._clock[0] - self._t_last[:n]).astype(np.float64)
        for name in self._additive:
            arr = getattr(self, name)
            arr[:n] *= w.reshape((n,) + (1,) * (arr.ndim - 1))
        self._t_last[:n] = self._clock[0]

    def _mark_model_dirty(self) -> None:  # noqa: B027 (optional hook)
        """Hook for models with one shared posterior."""

    @abstractmethod
    def _after_restore(self) -> None:
        """Rebuild scratch buffers sized by restored state."""

    # ------------------------------------------------------------ for subclasses
    @abstractmethod
    def _decide(self, cand: np.ndarray, x: np.ndarray | None, draw: bool = True) -> int:
        """One kernel call: fill ``self._p`` and draw (or only fill, ``draw=False``)."""

    @abstractmethod
    def candidate_means(self, cand: np.ndarray) -> np.ndarray:
        """Posterior mean reward of each candidate of the last :meth:`_decide` call."""

    @abstractmethod
    def _decide_batch(
        self,
        ptr: np.ndarray,
        idx: np.ndarray,
        xs: np.ndarray | None,
        probs: np.ndarray,
        chosen: np.ndarray,
    ) -> int: ...

    @abstractmethod
    def _update(self, arm: int, reward: float, x: np.ndarray | None) -> bool:
        """Fold one observation; False (state untouched) if the context is not finite."""

    @abstractmethod
    def _update_batch(
        self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray | None
    ) -> None: ...

    @abstractmethod
    def _refresh(self) -> None: ...

    @abstractmethod
    def _grow(self, capacity: int) -> None: ...

    @abstractmethod
    def _init_arms(self, new: np.ndarray, arm_features: Any) -> None: ...

    @abstractmethod
    def _ensure_scratch(self, n_candidates: int) -> None: ...

    def _check_new_arm_features(self, new: np.ndarray, arm_features: Any) -> None:
        if arm_features is not None:
            raise InvalidInputError(
                f"arm_features given, but {type(self).__name__} takes no arm features"
            )

    def _check_rewards(self, rewards: np.ndarray) -> None:  # noqa: B027 (optional hook)
        """Family-specific reward domain check (all finite already)."""

    # ------------------------------------------------------------------ helpers
    def _context(self, context: Any) -> np.ndarray | None:
        d = self.n_features
        if d is None:
            if context is not None:
                raise InvalidInputError(f"{type(self).__name__} takes no context, got one")
            return None
        if context is None:
            raise InvalidInputError(f"context is required: expected {d} floats")
        if type(context) is np.ndarray and context.dtype == np.float64 and context.shape == (d,):
            return context if context.flags.c_contiguous else np.ascontiguousarray(context)
        return as_float_array(context, "context", (d,))

    def _contexts(self, contexts: Any, n: int) -> np.ndarray | None:
        d = self.n_features
        if d is None:
            if contexts is not None:
                raise InvalidInputError(f"{type(self).__name__} takes no contexts, got some")
            return None
        if contexts is None:
            raise InvalidInputError(f"contexts are required: expected shape ({n}, {d})")
        return as_float_array(contexts, "contexts", (n, d))

    def _check_arm(self, arm: Any) -> None:
        if not isinstance(arm, (int, np.integer)) or isinstance(arm, bool):
            raise InvalidInputError(f"arm must be an integer index, got {arm!r}")
        if not 0 <= arm < self.registry.n_arms:
            raise UnknownArmError(f"arm {arm} is not a registered arm index")

    def _check_reward(self, reward: Any, name: str) -> float:
        if not isinstance(reward, (int, float, np.integer, np.floating)) or isinstance(
            reward, bool
        ):
            raise InvalidInputError(f"{name} must be a number, got {reward!r}")
        r = float(reward)
        if not math.isfinite(r):
            raise InvalidInputError(f"{name} = {r!r}: expected a finite number")
        if not self._reward_lo <= r <= self._reward_hi:
            self._check_rewards(np.array([r]))
        return r

    def _after_updates(self, n: int) -> None:
        self._pending += n
        if self._pending >= self.config.refresh_every:
            self.refresh()

    def _raise(self, code: int, cand: np.ndarray, where: str = "", pos: int | None = None) -> None:
        exc, text = _CANDIDATE_ERRORS[code]
        if code in (ck.ERR_RANGE, ck.ERR_RETIRED, ck.ERR_DUPLICATE):
            j = int(self._err[0]) if pos is None else pos
            if code == ck.ERR_RETIRED and cand[j] >= self.registry.n_arms:
                exc, text = _CANDIDATE_ERRORS[ck.ERR_RANGE]
            raise exc(f"{where}candidates[{j}] = {int(cand[j])} {text}")
        if code == ck.ERR_TOO_MANY:
            raise exc(
                f"{where}{cand.shape[0]} candidates: {text}, expected at most "
                f"max_candidates = {self.config.max_candidates}"
            )
        raise exc(f"{where}{text}")

    def _new_scratch(self, m_rows: int, n_candidates: int) -> None:
        size = max(m_rows, n_candidates, 1)
        if self._p.shape[0] < size:
            self._best = np.empty(size, dtype=np.float64)
            self._arg = np.empty(size, dtype=np.int64)
            self._p = np.empty(size, dtype=np.float64)
            self._mean_buf = np.empty(size, dtype=np.float64)
            self._sd_buf = np.empty(size, dtype=np.float64)
