"""What every family shares: declared state, input checks, the pipeline call, refresh
cadence, the arm catalogue, and the generic snapshot / delta / merge / adopt.

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
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from allocator.decisions import Decision, Decisions, bare_decision
from allocator.errors import InvalidInputError, SnapshotError, UnknownArmError, brief
from allocator.inputs import as_float_array, as_index_array, check_csr
from allocator.kernels import choice as ck
from allocator.policies.bound import BoundCall
from allocator.policies.state import COMMON_FIELDS, Field, ModelState, Role
from allocator.registry import ArmRegistry

_CANDIDATE_ERRORS = {
    ck.ERR_EMPTY: (InvalidInputError, "candidates is empty: expected at least one arm"),
    ck.ERR_RANGE: (UnknownArmError, "is not a registered arm index"),
    ck.ERR_RETIRED: (UnknownArmError, "is a retired arm"),
    ck.ERR_DUPLICATE: (InvalidInputError, "appears twice in candidates"),
    ck.ERR_NONFINITE: (InvalidInputError, "context contains NaN or inf"),
    ck.ERR_TOO_MANY: (InvalidInputError, "too many candidates"),
}

#: contract arrays for "no contract" (K = 0), in the kernels' order after arm_group, n_obs
_NO_CONTRACTS = (
    np.zeros((0, 7), dtype=np.int64), np.zeros((0, 5)), np.zeros((0, 0, 1), dtype=np.bool_),
    0.0, 1.0, 0.0,
)  # fmt: skip
_NO_CONTRACT_STATE = (
    np.zeros(0), np.zeros((0, 10)), np.zeros((0, 5), dtype=np.int64), np.zeros((2, 0, 1)),
    np.zeros((0, 1), dtype=np.bool_), np.zeros(1),
)  # fmt: skip


class Policy(ABC):
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
    #: optional fused kernel for one checked update: ``(arm, reward, *learn_args())`` folds
    #: the reward, counts it and returns True when a refresh is due (None: the batch path)
    LEARN_ONE: ClassVar[Any] = None
    #: whether the family learns the events (click, order, gmv) themselves rather than the
    #: objective's reward of them (every event field of an outcome then informs it)
    LEARNS_EVENTS: ClassVar[bool] = False

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
        self._err = np.zeros(2, dtype=np.int64)
        self._ptr1 = np.zeros(2, dtype=np.int64)
        self._t1 = np.zeros(1)
        self._out1 = np.zeros((3, 1), dtype=np.int64)
        self._out1_rows = (self._out1[0], self._out1[1], self._out1[2])  # made once
        self._codes0 = np.zeros((1, 0), dtype=np.int64)
        self._x_none = np.zeros((1, 0))
        self._p1 = np.zeros(1)
        self._arm1 = np.zeros(1, dtype=np.int64)
        self._r1 = np.zeros(1)
        self._c0 = 0  # where the contract arrays start in the kernel's arguments
        self._generation = 0  # bumped when a buffer of the single-call lists is replaced
        self._one = BoundCall(self.KERNEL, self._single_args)  # no contract
        self._one_contracts = BoundCall(self.KERNEL, self._single_args)
        self._lean = BoundCall(self.DECIDE_ONE, self._lean_call_args)
        self._joined = BoundCall(self.DECIDE_JOINED, self._joined_call_args)
        self._learn = BoundCall(self.LEARN_ONE, self._learn_args)
        self._last_n = 0
        self._scratch_size = 0
        self.ensure_scratch(16)

    # ------------------------------------------------------------ family interface
    @classmethod
    @abstractmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        """Named dimensions of the family's fields for ``config``."""

    def _configure(self) -> None:  # noqa: B027 (optional hook)
        """Family constants and buffers derived from the config (built and restored alike)."""

    def _init_model(self) -> None:  # noqa: B027 (optional hook)
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

    def _new_scratch(self, size: int) -> None:
        self.best_buf = np.empty(size)
        self.arg_buf = np.empty(size, dtype=np.int64)
        self.mean_buf = np.empty(size)
        self.sd_buf = np.empty(size)

    def _check_rewards(self, rewards: np.ndarray) -> None:  # noqa: B027 (optional hook)
        """Family-specific reward domain check (all finite already)."""

    def check_arm_features(self, n_new: int, arm_features: Any) -> np.ndarray | None:
        if arm_features is not None:
            raise InvalidInputError(
                f"arm_features given, but {type(self).__name__} takes no arm features"
            )
        return None

    def _learned_changed(self) -> None:  # noqa: B027 (optional hook)
        """Hook for models with one shared posterior: evidence changed outside updates."""

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
    def probabilities(self) -> np.ndarray:
        """Choice probabilities over the last single request's candidates (a copy)."""
        return self._p1[: self._last_n].copy()

    @property
    def stream_position(self) -> int:
        """Uniforms drawn so far from the decision stream (one per drawn decision)."""
        return int(self.state.stream[1])

    def seek_stream(self, position: int) -> None:
        """Set the decision stream to ``position`` (a replay that decided ahead rewinds)."""
        if not isinstance(position, (int, np.integer)) or position < 0:
            raise InvalidInputError(f"position = {position!r}: expected an integer >= 0")
        self.state.stream[1] = np.uint64(position)

    def propensity(self, position: int) -> float:
        """Final probability of ``position`` in the last single request."""
        return self._p1.item(position)

    @property
    def slots(self) -> int:
        """Most candidates one request may have."""
        return int(getattr(self.config, "max_candidates", 1 << 62))

    # ------------------------------------------------------------------ decisions
    def decide(self, candidates: Any, context: Any = None) -> Decision:
        """Choose one of ``candidates`` (arm indices); the decision carries its propensity."""
        cand = as_index_array(candidates, "candidates")
        x = self.context_row(context)
        pos, _, _ = self.decide_one(cand, x, 0.0, self._codes0, None)
        return bare_decision(pos, cand.item(pos), self._p1.item(pos), self.state.version.item(0))

    def decide_batch(
        self, cand_ptr: Any, cand_idx: Any, contexts: Any = None, draw: bool = True
    ) -> Decisions:
        """Decide for R requests given as CSR candidate lists (``cand_ptr`` has R+1 entries).

        With ``draw=False`` only the (ε-mixed) probabilities are computed and the decision
        stream is left untouched: the target distribution of an evaluation.
        """
        ptr, idx = check_csr(cand_ptr, cand_idx)
        n_req = ptr.shape[0] - 1
        xs = self.context_rows(contexts, n_req)
        times = np.zeros(n_req)
        codes = np.zeros((n_req, 0), dtype=np.int64)
        return self.decide_many(ptr, idx, xs, times, codes, None, draw)

    def decide_one(
        self, cand: np.ndarray, x: np.ndarray, t: float, codes: np.ndarray,
        contracts: tuple[Any, ...] | None,
    ) -> tuple[int, int, int]:  # fmt: skip
        """One checked request (``x`` (1, d), ``codes`` (1, A)) through the pipeline, by the
        kernel's bound entry point over the cached argument list (:mod:`.bound`: only the
        request's slots are written per call).

        Returns (position, forcing contract or -1, adjusted bitmask); the probabilities stay
        in :attr:`probabilities` until the next call.
        """
        n = cand.shape[0]
        if n > self._scratch_size or n > self._p1.shape[0]:
            self._grow_single(n)
        reg = self.registry
        key = (self._generation, self.state.generation, reg.generation, reg.n_arms)
        if contracts is None and self.DECIDE_ONE is not None:
            lean = self._lean
            args = lean.args if key == lean.key else lean.bind(key)
            args[0] = cand
            pos = lean.entry(*args)
            if pos < 0:
                self._ptr1[1] = n
                self._fail(pos, self._ptr1, cand, x)
            self._last_n = n
            return pos, -1, 0
        if contracts is None:
            call = self._one
            args = call.bind(key)
        else:
            call = self._one_contracts
            args = call.bind(key, contracts)
            args[self._c0 : self._c0 + len(contracts)] = contracts
        args[1], args[2], args[4] = cand, x, codes
        self._ptr1[1] = n
        self._t1[0] = t
        code = call.entry(*args)
        if code < 0:
            self._fail(code, self._ptr1, cand, x)
        self._last_n = n
        (pos,), (forced,), (adjusted,) = self._out1.tolist()
        return pos, forced, adjusted

    def _single_args(self, contracts: tuple[Any, ...] | None = None) -> list[Any]:
        """The argument list of a single request (its slots hold placeholders until the
        call): built when the arrays it holds were replaced (see :meth:`decide_one`)."""
        self._check_synced()
        args = self._args(
            self._ptr1, self._arm1, self._x_none, self._t1, self._codes0, True, contracts,
            self._p1, self._out1,
        )  # fmt: skip
        self._c0 = 7 + len(self.model_args())
        return list(args)

    def _grow_single(self, n: int) -> None:
        """Scratch and the probability buffer grown for a single request of ``n``."""
        self.ensure_scratch(n)
        if self._p1.shape[0] < n:
            self._p1 = np.empty(max(n, 2 * self._p1.shape[0]))
            self._generation += 1

    def _lean_call_args(self) -> list[Any]:
        """The argument list of :attr:`DECIDE_ONE` (``cand`` a placeholder until the call)."""
        self._check_synced()
        return [self._arm1, *self.lean_args(), self._p1, self._err]

    def _joined_call_args(self) -> list[Any]:
        """The argument list of :attr:`DECIDE_JOINED` (``q``, ``cand``: placeholders of
        their types; ``q`` is read-only, as :meth:`ArmRegistry.joined_ids` makes it)."""
        reg = self.registry
        return [*reg.id_table(), reg.joined_ids([]), *self._lean_call_args()]

    def decide_joined(self, q: np.ndarray, cand: np.ndarray) -> tuple[int, int, int]:
        """:meth:`decide_one` for a context-free request without contracts whose candidates
        are ids joined by NUL (``q``: :meth:`ArmRegistry.joined_ids`), resolved into
        ``cand`` (n,) by the same compiled call (:attr:`DECIDE_JOINED`, which the caller
        checked is set). Returns (position, -1, 0), or (-1, status, position) of the first
        id the lookup refused (:mod:`allocator.kernels.idtable` codes; nothing changed)."""
        n = cand.shape[0]
        if n > self._scratch_size or n > self._p1.shape[0]:
            self._grow_single(n)
        reg = self.registry
        call = self._joined
        key = (self._generation, self.state.generation, reg.generation, reg.n_arms)
        args = call.args if key == call.key else call.bind(key)
        args[3], args[4] = q, cand
        pos = call.entry(*args)
        if pos == ck.ERR_LOOKUP:
            return -1, int(self._err[0]), int(self._err[1])
        if pos < 0:
            self._ptr1[1] = n
            self._fail(pos, self._ptr1, cand, self._x_none)
        self._last_n = n
        return pos, -1, 0

    def decide_many(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray, times: np.ndarray,
        codes: np.ndarray, contracts: tuple[Any, ...] | None, draw: bool = True,
        names: tuple[str, ...] = (),
    ) -> Decisions:  # fmt: skip
        """A checked CSR batch through the pipeline (see :meth:`decide_batch`)."""
        n_req = ptr.shape[0] - 1
        self.ensure_scratch(int(np.diff(ptr).max(initial=1)))
        probs = np.empty(idx.shape[0])
        out = np.empty((3, n_req), dtype=np.int64)
        self._call(ptr, idx, xs, times, codes, draw, contracts, probs, out)
        flat = ptr[:-1] + out[0]
        return Decisions(
            positions=out[0], arms=idx[flat], propensities=probs[flat], probabilities=probs,
            forced=out[1], adjusted=out[2], timestamps=times, constraint_names=names,
            model_version=self.version,
        )  # fmt: skip

    def kernel_args(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray, times: np.ndarray,
        codes: np.ndarray, draw: bool, contracts: tuple[Any, ...] | None, probs: np.ndarray,
        out: np.ndarray,
    ) -> tuple[Any, ...]:  # fmt: skip
        """The full argument list of :attr:`KERNEL` for a checked batch: requests, model,
        contract arrays (``None``: no contract), stream and scratch, outputs (``probs``
        (nnz,), ``out`` (3, R): positions, forcing contract, adjusted mask). Scratch is
        sized for the batch's largest request first (the kernels trust it)."""
        self.ensure_scratch(int(np.diff(ptr).max(initial=1)))
        return self._args(ptr, idx, xs, times, codes, draw, contracts, probs, out)

    def _args(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray, times: np.ndarray,
        codes: np.ndarray, draw: bool, contracts: tuple[Any, ...] | None, probs: np.ndarray,
        out: np.ndarray,
    ) -> tuple[Any, ...]:  # fmt: skip
        reg = self.registry
        if contracts is None:
            contracts = (*_NO_CONTRACTS, reg.arm_group, self.state.n_obs, *_NO_CONTRACT_STATE)
        rows = self._out1_rows if out is self._out1 else (out[0], out[1], out[2])
        return (
            ptr, idx, xs, times, codes, draw, reg.active, *self.model_args(), *contracts,
            self.state.stream, self.state.pos_of_arm, *self.scratch_args(), probs, *rows,
            self._err,
        )  # fmt: skip

    def _call(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray, times: np.ndarray,
        codes: np.ndarray, draw: bool, contracts: tuple[Any, ...] | None, probs: np.ndarray,
        out: np.ndarray,
    ) -> None:  # fmt: skip
        """Run :attr:`KERNEL` on a batch (callers sized the scratch)."""
        self._check_synced()
        args = self._args(ptr, idx, xs, times, codes, draw, contracts, probs, out)
        code = self.KERNEL(*args)
        if code < 0:
            self._fail(code, ptr, idx, xs)

    def _check_synced(self) -> None:
        if self.registry.n_arms != self.state.n_synced[0]:  # arms without state: refuse
            raise InvalidInputError(
                f"the registry has {self.registry.n_arms} arms, this policy has state for "
                f"{int(self.state.n_synced[0])}: call sync_arms() after adding arms to a "
                "registry directly (an Engine or Allocator does it in add_arms)"
            )

    def _fail(self, code: int, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray) -> None:
        """Raise the error the kernel reported (``code`` < 0, ``err``: request, position)."""
        r, j = int(self._err[0]), int(self._err[1])
        where = f"request {r}: " if ptr.shape[0] > 2 else ""
        if code == ck.ERR_NONFINITE:
            as_float_array(xs[r], f"{where}context", (-1,))
        self._raise(int(code), idx[ptr[r] : ptr[r + 1]], where, j)

    # ------------------------------------------------------------------- learning
    def update(self, arm: int, reward: float, context: Any = None) -> None:
        """Fold one observed reward for ``arm`` (with its context for contextual models)."""
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
    def export_state(self, copy: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Every saved state array (copies unless ``copy=False``: see
        :meth:`ModelState.snapshot`), plus JSON-able meta (the bank RNG state)."""
        return self.state.snapshot(copy), {
            "kind": self.config.kind,
            "rng": self.rng.bit_generator.state,
        }

    @classmethod
    def restore(
        cls, config: Any, registry: ArmRegistry, seed: int,
        arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], copy: bool = True,
    ) -> Policy:  # fmt: skip
        """Rebuild a policy exactly as exported: it then makes the same decisions. With
        ``copy=False`` it adopts ``arrays`` (see :meth:`ModelState.restore`)."""
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
        try:
            policy.rng.bit_generator.state = dict(meta["rng"])
        except (KeyError, TypeError, ValueError) as err:
            raise SnapshotError(f"bank RNG state is unreadable: {err}") from None
        return policy

    @classmethod
    def restored_sizes(cls, config: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Sizes for restoring ``arrays`` (families whose sizes depend on capacity override)."""
        first = arrays.get("n_obs")
        return cls.sizes(config, 1 if first is None else max(int(first.shape[0]), 1))

    def adopt_learned(self, other: Policy) -> None:
        """Take ``other``'s evidence and per-arm priors (same arms), then refresh everything.

        Used by hot reload: hyper-parameters come from this policy's config, evidence from
        the running one.
        """
        other.settle()
        n = min(other.registry.n_arms, self.registry.n_arms)
        self.state.adopt(other.state, n)
        if "t_last" in self.state.names:
            self.state.t_last[:n] = self.state.clock[0]
        self.state.dirty[:n] = True
        self._learned_changed()
        self.refresh()

    def settle(self) -> None:
        """Apply pending lazy forgetting, so stored statistics are effective at the clock."""
        self.state.settle(self.gamma, self.registry.n_arms)

    def export_delta(self) -> dict[str, np.ndarray]:
        """What this replica learned since its previous export (sufficient statistics).

        Exact for the conjugate models without forgetting. With forgetting, the previous
        export is first decayed to this replica's clock, so the delta holds exactly the new
        observations, weighted as of now; the learner folds it in as if observed at its own
        clock (an approximation whose error shrinks with the export interval relative to the
        half-life).
        """
        self.settle()
        current = self.state.additive(self.registry.n_arms)
        decay = self.gamma ** float(self.state.clock[0] - self._delta_clock)
        decaying = {f.name for f in self.state.select(Role.DECAYS)}
        delta = {}
        for name, value in current.items():
            base = self._delta_base.get(name)
            diff = value.copy()
            if base is not None:
                diff[: base.shape[0]] -= base * decay if name in decaying else base
            delta[name] = diff
        self._delta_base = current
        self._delta_clock = int(self.state.clock[0])
        return delta

    def merge(self, delta: Mapping[str, Any]) -> None:
        """Fold a replica's :meth:`export_delta` into this policy, then refresh.

        The delta is checked whole (names, shapes, finiteness), and so is the posterior it
        would produce (finite, counts non-negative, within what observations inside the
        input bounds can sum to, and any family-specific validity), before anything changes.
        """
        checked = self.state.check_delta(
            delta, self.registry.n_arms, f"a {self.config.kind} policy"
        )
        n_obs = checked["n_obs"]
        scale = max(1.0, self.input_bound, self.reward_bound) ** 2
        limit = (float(self.state.clock[0]) + float(n_obs.sum()) + 1.0) * scale
        merged = self.state.merged(checked, self.gamma, limit)
        self._check_merged(merged, n_obs > 0)
        self.settle()
        k = self.state.put(merged)
        self.state.clock[0] += int(n_obs.sum())
        if "t_last" in self.state.names:
            self.state.t_last[:k] = self.state.clock[0]
        self.state.dirty[:k] |= n_obs > 0
        self._learned_changed()
        self.refresh()

    def _check_merged(  # noqa: B027 (optional hook)
        self, merged: Mapping[str, np.ndarray], touched: np.ndarray
    ) -> None:
        """Family hook: raise :class:`InvalidInputError` if ``merged`` statistics (see
        :meth:`ModelState.merged`; ``touched`` marks the arms the delta observed) cannot be a
        valid posterior's (the conjugate families need nothing beyond the field checks)."""

    # ------------------------------------------------------------------ helpers
    def ensure_scratch(self, n_candidates: int) -> None:
        """Grow per-candidate scratch buffers to hold ``n_candidates``."""
        size = max(n_candidates, self._min_scratch(), 1)
        if size > self._scratch_size:
            self._new_scratch(size)
            self._scratch_size = size
            self._generation += 1

    def _min_scratch(self) -> int:
        return 1

    def context_row(self, context: Any) -> np.ndarray:
        """One request's context as a (1, d) row (d = 0 for context-free models)."""
        d = self.n_features
        if d is None:
            if context is not None:
                raise InvalidInputError(f"{type(self).__name__} takes no context, got one")
            return self._x_none
        if context is None:
            raise InvalidInputError(f"context is required: expected {d} floats")
        return as_float_array(context, "context", (d,), self.input_bound).reshape(1, d)

    def context_rows(self, contexts: Any, n: int) -> np.ndarray:
        """R requests' contexts as (R, d) (d = 0 for context-free models)."""
        d = self.n_features
        if d is None:
            if contexts is not None:
                raise InvalidInputError(f"{type(self).__name__} takes no contexts, got some")
            return np.zeros((n, 0))
        if contexts is None:
            raise InvalidInputError(f"contexts are required: expected shape ({n}, {d})")
        return as_float_array(contexts, "contexts", (n, d), self.input_bound)

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

    def _raise(self, code: int, cand: np.ndarray, where: str, j: int) -> None:
        exc, text = _CANDIDATE_ERRORS[code]
        if code in (ck.ERR_RANGE, ck.ERR_RETIRED, ck.ERR_DUPLICATE):
            if code == ck.ERR_RETIRED and cand[j] >= self.registry.n_arms:
                exc, text = _CANDIDATE_ERRORS[ck.ERR_RANGE]
            raise exc(f"{where}candidates[{j}] = {int(cand[j])} {text}")
        if code == ck.ERR_TOO_MANY:
            raise exc(
                f"{where}{cand.shape[0]} candidates: {text}, expected at most "
                f"max_candidates = {self.slots}"
            )
        raise exc(f"{where}{text}")
