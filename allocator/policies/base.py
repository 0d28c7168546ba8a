"""What every family shares: declared state, learning and refresh cadence, the arm
catalogue, restore; the pipeline call and input shaping come from :mod:`.calls`, and the
generic snapshot / delta / merge / adopt from :mod:`.exchange`.

A family declares its arrays (:attr:`Policy.FIELDS`), writes its kernel argument list once
(:meth:`Policy.model_args`, :meth:`Policy.scratch_args`) and its update and refresh. The
decision kernel of every family runs the same pipeline (``kernels.pipeline``) over a CSR
batch; a single request is a batch of one, and contracts come in as extra arrays (none for
a bare policy). Two random streams keep decisions reproducible and cheap to snapshot: the
decision stream is counter-based (two ``uint64`` words, a state array) and the bank stream
is a numpy ``Generator`` used only when the posterior is refreshed.
"""

from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from allocator.errors import InvalidInputError, SnapshotError, UnknownArmError, brief
from allocator.inputs import as_float_array, as_index_array
from allocator.policies.bound import BoundCall
from allocator.policies.calls import DecisionCalls
from allocator.policies.exchange import StateExchange
from allocator.policies.state import COMMON_FIELDS, Field, ModelState
from allocator.registry import ArmRegistry


class Policy(DecisionCalls, StateExchange, ABC):
    """A posterior family plus a rule (Thompson, UCB, greedy) and ε-mixing."""

    #: the family's arrays beyond :data:`COMMON_FIELDS`
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    #: the family's decide kernel (see ``kernels.pipeline`` for its shape)
    KERNEL: ClassVar[Any]
    #: rewards inside this range skip the (array-based) domain check on the scalar path
    REWARD_RANGE: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    #: context length expected by ``decide`` (None = context-free model)
    n_features: int | None = None
    #: whether an update can change the next decisions before the next refresh (a family
    #: whose decisions read only refreshed arrays sets False; replay batches on it)
    UPDATES_MOVE_DECISIONS: ClassVar[bool] = True
    #: optional lean kernel for one request without contracts: ``(cand, *lean_args(), p,
    #: err)`` returns the chosen position or a negative error code, deciding exactly what
    #: :attr:`KERNEL` decides on a batch of one (None: the full pipeline serves it)
    DECIDE_ONE: ClassVar[Any] = None
    #: optional :attr:`DECIDE_ONE` on ids: ``(table, chars, offsets, q, cand, *lean_args(),
    #: p, err)`` resolves the joined ids ``q`` into ``cand`` first (see :meth:`decide_joined`)
    DECIDE_JOINED: ClassVar[Any] = None
    #: optional kernel for one request under contracts: ``(cand, x, t, codes, bound,
    #: active, *model_args(), *contract args, stream, pos_of_arm, *scratch_args(), p, out,
    #: err)`` deciding exactly what :attr:`KERNEL` decides on a batch of one, and its form
    #: on ids (``table, chars, offsets, q`` first; see :meth:`decide_contracted`)
    DECIDE_CONTRACTED: ClassVar[Any] = None
    DECIDE_CONTRACTED_IDS: ClassVar[Any] = None
    #: optional fused kernel for one checked update: ``(arm, reward, *learn_args())`` folds
    #: the reward, counts it and returns True when a refresh is due (None: the batch path)
    LEARN_ONE: ClassVar[Any] = None
    #: whether the family learns the events (click, order, gmv) themselves rather than the
    #: objective's reward of them (every event field of an outcome then informs it)
    LEARNS_EVENTS: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A class with its own :attr:`KERNEL` decides differently from its parent's lean
        entries, so it inherits none of them (it may declare its own)."""
        super().__init_subclass__(**kwargs)
        if "KERNEL" in vars(cls):
            for name in (
                "DECIDE_ONE",
                "DECIDE_JOINED",
                "DECIDE_CONTRACTED",
                "DECIDE_CONTRACTED_IDS",
            ):
                if name not in vars(cls):
                    setattr(cls, name, None)

    def __init__(
        self, config: Any, registry: ArmRegistry, seed: int, arm_features: Any = None
    ) -> None:
        self._setup(config, registry, seed, self.sizes(config, registry.capacity))
        self.state.stream[0] = self._stream_key
        self._init_model()
        self.sync_arms(arm_features)

    def _setup(
        self, config: Any, registry: ArmRegistry, seed: int, sizes: dict[str, int],
        capacity: int | None = None,
    ) -> None:  # fmt: skip
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise InvalidInputError(f"seed must be a non-negative integer, got {brief(seed)}")
        self.config = config
        self.registry = registry
        self.gamma = float(config.gamma)
        self.rule = int(config.rule_code)
        self.eps = float(config.epsilon)
        self.ucb_alpha = float(config.ucb_alpha)
        self.input_bound = float(config.max_abs_input)
        self.reward_bound = float(config.max_abs_reward)
        self._configure()
        bank_seq, stream_seq = np.random.SeedSequence(int(seed)).spawn(2)
        self.rng = np.random.Generator(np.random.PCG64(bank_seq))
        self._stream_key = stream_seq.generate_state(1, np.uint64)[0]
        capacity = registry.capacity if capacity is None else capacity
        self.state = ModelState(COMMON_FIELDS + self.FIELDS, sizes, capacity)
        self._delta_base: dict[str, np.ndarray] = {}
        self._delta_clock = 0
        self._r1 = np.zeros(1)
        self.make_call_buffers()
        self._learn = BoundCall(self.LEARN_ONE, self._learn_args)
        # rewards the scalar path accepts without its checks: finite bounds, so that NaN
        # and inf fail the comparison and take the checks (which raise)
        lo, hi = self.REWARD_RANGE
        self._reward_lo = max(lo, -self.reward_bound, -sys.float_info.max)
        self._reward_hi = min(hi, self.reward_bound, sys.float_info.max)

    # ------------------------------------------------------------ family interface
    @classmethod
    @abstractmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        """Named dimensions of the family's fields for ``config``."""

    def _configure(self) -> None:
        """Family constants and buffers derived from the config (built and restored alike)."""

    def _init_model(self) -> None:
        """Model-wide initial values (after the state arrays exist)."""

    @abstractmethod
    def model_args(self) -> tuple[Any, ...]:
        """The model arrays of the decide kernel, in its order: state fields and constants
        set by :meth:`_configure` (the single-call path caches them until the state's
        arrays are replaced)."""

    @abstractmethod
    def scratch_args(self) -> tuple[Any, ...]:
        """The scratch buffers of the decide kernel, in its order (before ``p_out``); made
        by :meth:`_new_scratch`."""

    def lean_args(self) -> tuple[Any, ...]:
        """The arguments of :attr:`DECIDE_ONE` between ``cand`` and ``p, err`` (state
        fields, constants and scratch: cached like :meth:`model_args`)."""
        return ()

    def learn_args(self) -> tuple[Any, ...]:
        """The arguments of :attr:`LEARN_ONE` after ``arm, reward`` (state fields and
        constants: cached until the state's arrays are replaced)."""
        return ()

    @abstractmethod
    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None: ...

    @abstractmethod
    def _refresh(self) -> None: ...

    @abstractmethod
    def _init_arms(self, new: np.ndarray, arm_features: np.ndarray | None) -> None: ...

    def _check_rewards(self, rewards: np.ndarray) -> None:
        """Family-specific reward domain check (all finite already)."""

    def check_arm_features(self, n_new: int, arm_features: Any) -> np.ndarray | None:
        if arm_features is not None:
            raise InvalidInputError(
                f"arm_features given, but {type(self).__name__} takes no arm features"
            )
        return None

    def given_arm_features(self) -> np.ndarray | None:
        """The registered arms' features as they were given (None: a family without)."""
        return None

    # ------------------------------------------------------------------ read-only
    @property
    def clock(self) -> int:
        """Observations folded into the model so far (the forgetting clock)."""
        return int(self.state.clock[0])

    @property
    def version(self) -> int:
        """Number of refreshes so far (the model version decisions are logged with)."""
        return self.state.version.item(0)

    @property
    def pending_updates(self) -> int:
        """Updates folded in since the last refresh."""
        return self.state.pending.item(0)

    @property
    def n_observations(self) -> np.ndarray:
        """Raw (undiscounted) number of rewards folded in per arm (capacity,); read-only."""
        view = self.state.n_obs.view()
        view.flags.writeable = False
        return view

    @property
    def stream_position(self) -> int:
        """Uniforms drawn so far from the decision stream (one per drawn decision)."""
        return int(self.state.stream[1])

    def seek_stream(self, position: int) -> None:
        """Set the decision stream to ``position`` (a replay that decided ahead rewinds)."""
        if not isinstance(position, (int, np.integer)) or position < 0:
            raise InvalidInputError(f"position = {position!r}: expected an integer >= 0")
        self.state.stream[1] = np.uint64(position)

    @property
    def slots(self) -> int:
        """Most candidates one request may have."""
        return int(getattr(self.config, "max_candidates", 1 << 62))

    # ------------------------------------------------------------------- learning
    def update(self, arm: int, reward: float, context: Any = None) -> None:
        """Fold one observed reward for ``arm`` (with its context for contextual models).

        An int arm and a float reward that plainly pass the checks go straight to the
        bound :attr:`LEARN_ONE` entry (the online loop's step); anything else, or a first
        call after the state's arrays were replaced, takes the checks and
        :meth:`update_checked`, which then binds it: the same arithmetic either way."""
        learn = self._learn
        if (
            type(arm) is int and type(reward) is float and context is None
            and learn.key == self.state.generation and self.n_features is None
            and 0 <= arm < self.registry.n_arms and self._reward_lo <= reward <= self._reward_hi
        ):  # fmt: skip
            args = learn.args
            args[0] = arm
            args[1] = reward
            if learn.entry(*args):
                self.refresh()
            return
        self._check_arm(arm)
        r = self._check_reward(reward, "reward")
        self.update_checked(arm, r, self.context_row(context))

    def update_checked(self, arm: int, reward: float, x: np.ndarray) -> bool:
        """:meth:`update` for a caller that checked ``arm``, ``reward`` (:meth:`check_reward`)
        and the (1, d) context row (:meth:`context_row`): the serving path's learning step,
        through preallocated one-element arrays. True when it refreshed the posterior."""
        if self.LEARN_ONE is not None:
            learn = self._learn
            args = learn.bind(self.state.generation)
            args[0], args[1] = arm, reward
            due = learn.entry(*args)
        else:
            self._arm1[0] = arm
            self._r1[0] = reward
            self._update_batch(self._arm1, self._r1, x)
            s = self.state
            s.n_obs[arm] += 1
            s.pending[0] += 1
            due = s.pending[0] >= self.config.refresh_every
        if not due:
            return False
        self.refresh()
        return True

    def _learn_args(self) -> list[Any]:
        return [0, 0.0, *self.learn_args()]

    def update_batch(self, arms: Any, rewards: Any, contexts: Any = None) -> None:
        """Fold many rewards in order; equivalent to calling :meth:`update` for each."""
        a = as_index_array(arms, "arms")
        r = as_float_array(rewards, "rewards", (a.shape[0],), self.reward_bound)
        bad = (a < 0) | (a >= self.registry.n_arms)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UnknownArmError(f"arms[{i}] = {a[i]} is not a registered arm index")
        self._check_rewards(r)
        xs = self.context_rows(contexts, a.shape[0])
        self._update_batch(a, r, xs)
        np.add.at(self.state.n_obs, a, 1)
        self._after_updates(a.shape[0])

    def check_reward(self, reward: Any, name: str = "reward") -> float:
        """``reward`` as a float, or :class:`InvalidInputError` unless it is a finite number in
        the family's domain (the scalar :meth:`check_rewards`)."""
        return self._check_reward(reward, name)

    def learn_outcomes(
        self, arms: Any, click: Any, order: Any, gmv: Any, rewards: Any, contexts: Any = None
    ) -> None:
        """Fold impressions' outcomes (click, order, gmv) and the objective's ``rewards`` of
        them: a scalar-reward family learns the rewards (:meth:`update_batch`); a factored
        one overrides this to learn the events themselves."""
        self.update_batch(arms, rewards, contexts)

    def learn_outcome(
        self, arm: int, click: float, order: float, gmv: float, reward: float,
        context: Any = None,
    ) -> None:  # fmt: skip
        """:meth:`learn_outcomes` for one impression (:meth:`update` here)."""
        self.update(arm, reward, context)

    def check_outcomes(
        self, click: Any, order: Any, gmv: Any, rewards: Any, name: str = "rewards"
    ) -> None:
        """Raise :class:`InvalidInputError` unless :meth:`learn_outcomes` would accept these
        outcomes (here: the rewards, see :meth:`check_rewards`); nothing changes."""
        self.check_rewards(rewards, name)

    def check_rewards(self, rewards: np.ndarray, name: str = "rewards") -> None:
        """Raise :class:`InvalidInputError` unless every reward is finite and in the family's
        domain (nothing changes either way)."""
        r = as_float_array(rewards, name, (-1,), self.reward_bound)
        self._check_rewards(r)

    def _after_updates(self, n: int) -> None:
        self.state.pending[0] += n
        if self.state.pending[0] >= self.config.refresh_every:
            self.refresh()

    @contextmanager
    def bank_in_use(self, width: int) -> Iterator[None]:
        """Within the block no request has more than ``width`` candidates (a replay knows
        its log's widest round): a family whose bank has one slot per candidate position
        redraws only the slots such requests read. A no-op for the others."""
        yield

    def refresh(self) -> None:
        """Bring the posterior and the sample bank up to date with every update so far."""
        self._refresh()
        self.state.pending[0] = 0
        self.state.version[0] += 1

    # ------------------------------------------------------------------ catalogue
    def sync_arms(self, arm_features: Any = None) -> np.ndarray:
        """Give state to the arms added to the registry since the last sync.

        New arms start from their group's prior (configured, or empirical: the group's
        current posterior means) and are sampled at once, so they can be chosen right away
        with the probability their prior gives them. Cost: proportional to the new arms
        (plus an amortised doubling of the per-arm arrays). Returns the new indices.
        """
        n = self.registry.n_arms
        new = np.arange(int(self.state.n_synced[0]), n, dtype=np.int64)
        features = self.check_arm_features(new.size, arm_features)
        if self.registry.capacity > self.state.capacity:
            self.state.grow(self.registry.capacity)
        if new.size:
            self._init_arms(new, features)
            if "t_last" in self.state.names:
                self.state.t_last[new] = self.state.clock[0]
            self.state.dirty[new] = True
            self.state.n_synced[0] = n
            self._generation += 1
            self._refresh()
        return new

    # ------------------------------------------------------ state, deltas, reload
    @classmethod
    def restore(
        cls, config: Any, registry: ArmRegistry, seed: int,
        arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], copy: bool = True,
    ) -> Policy:  # fmt: skip
        """Rebuild a policy exactly as exported: it then makes the same decisions. With
        ``copy=False`` it adopts ``arrays`` (see :meth:`ModelState.restore`)."""
        if not isinstance(meta, Mapping):
            raise SnapshotError(f"policy meta is {brief(meta)}, expected a mapping")
        if meta.get("kind") != config.kind:
            raise SnapshotError(f"state is of kind {meta.get('kind')!r}, config is {config.kind!r}")
        policy = cls.__new__(cls)
        policy._setup(config, registry, seed, cls.restored_sizes(config, arrays), capacity=0)
        policy.state.restore(arrays, copy)
        if (
            int(policy.state.n_synced[0]) != registry.n_arms
            or policy.state.capacity < registry.n_arms
        ):
            raise SnapshotError(
                f"policy state covers {int(policy.state.n_synced[0])} arms in capacity "
                f"{policy.state.capacity}, the registry has {registry.n_arms}"
            )
        policy.state.grow(registry.capacity)
        policy._check_restored()
        try:
            policy.rng.bit_generator.state = dict(meta["rng"])
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise SnapshotError(f"bank RNG state is unreadable: {err}") from None
        return policy

    def _check_restored(self) -> None:
        """Refuse restored arrays no run of this policy could hold, with a
        :class:`SnapshotError` (each family adds its rules to the statistics' checks)."""
        self.check_restored_statistics()

    @classmethod
    def restored_sizes(cls, config: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Sizes for restoring ``arrays`` (families whose sizes depend on capacity override)."""
        first = arrays.get("n_obs")
        return cls.sizes(config, 1 if first is None else max(int(first.shape[0]), 1))

    def _check_arm(self, arm: Any) -> None:
        if not isinstance(arm, (int, np.integer)) or isinstance(arm, bool):
            raise InvalidInputError(f"arm must be an integer index, got {brief(arm)}")
        if not 0 <= arm < self.registry.n_arms:
            raise UnknownArmError(f"arm {arm} is not a registered arm index")

    def _check_reward(self, reward: Any, name: str) -> float:
        if not isinstance(reward, (int, float, np.integer, np.floating)) or isinstance(
            reward, bool
        ):
            raise InvalidInputError(f"{name} must be a number, got {brief(reward)}")
        r = float(reward)
        if not math.isfinite(r):
            raise InvalidInputError(f"{name} = {r!r}: expected a finite number")
        if abs(r) > self.reward_bound:
            raise InvalidInputError(
                f"{name} = {r!r}: expected |reward| <= max_abs_reward = {self.reward_bound:g}"
            )
        lo, hi = self.REWARD_RANGE
        if not lo <= r <= hi:
            self._check_rewards(np.array([r]))
        return r
