"""How a policy calls its decide kernel: input shaping, argument lists and error reports.

Split from :mod:`.base` so the family interface and learning read on their own. A single
request runs through argument lists bound once (:mod:`.bound`) over one-element buffers this
module owns; a batch builds its list per call. The kernels report bad candidates by code and
position; :mod:`.refusals` turns them into typed errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import numpy as np

from allocator.decisions import Decision, Decisions, bare_decision
from allocator.errors import InvalidInputError
from allocator.inputs import as_float_array, as_index_array, check_csr
from allocator.kernels import choice as ck
from allocator.policies.bound import BoundCall
from allocator.policies.refusals import check_synced, raise_refusal
from allocator.policies.state import ModelState
from allocator.registry import ArmRegistry

_INT64 = np.dtype(np.int64)

#: contract arrays for "no contract" (K = 0), in the kernels' order after arm_group, n_obs
_NO_CONTRACTS = (
    np.zeros((0, 7), dtype=np.int64), np.zeros((0, 5)), np.zeros((0, 0, 1), dtype=np.bool_),
    0.0, 1.0, 0.0,
)  # fmt: skip
_NO_CONTRACT_STATE = (
    np.zeros(0), np.zeros((0, 10)), np.zeros((0, 5), dtype=np.int64), np.zeros((2, 0, 1)),
    np.zeros((0, 1), dtype=np.bool_), np.zeros(1),
)  # fmt: skip


class DecisionCalls:
    """The decision half of :class:`~allocator.policies.base.Policy` (its only host).

    Needs from the host: ``registry``, ``state``, ``config``, ``n_features``,
    ``input_bound``, ``version``, the kernels (``KERNEL``, ``DECIDE_ONE``, ``DECIDE_JOINED``)
    and their argument lists (``model_args``, ``scratch_args``, ``lean_args``). The host
    calls :meth:`make_call_buffers` once while it is set up.
    """

    KERNEL: ClassVar[Any]
    DECIDE_ONE: ClassVar[Any]
    DECIDE_JOINED: ClassVar[Any]
    DECIDE_CONTRACTED: ClassVar[Any]
    DECIDE_CONTRACTED_IDS: ClassVar[Any]
    n_features: int | None
    registry: ArmRegistry
    state: ModelState
    config: Any
    input_bound: float

    if TYPE_CHECKING:

        @property
        def version(self) -> int: ...

        @property
        def slots(self) -> int: ...

        def model_args(self) -> tuple[Any, ...]: ...

        def scratch_args(self) -> tuple[Any, ...]: ...

        def lean_args(self) -> tuple[Any, ...]: ...

    def make_call_buffers(self) -> None:
        """The one-element buffers and bound argument lists of the single-request path."""
        self._err = np.zeros(2, dtype=np.int64)
        self._ptr1 = np.zeros(2, dtype=np.int64)
        self._t1 = np.zeros(1)
        self._out1 = np.zeros((3, 1), dtype=np.int64)
        self._out1_rows = (self._out1[0], self._out1[1], self._out1[2])  # made once
        self._codes0 = np.zeros((1, 0), dtype=np.int64)
        self._x_none = np.zeros((1, 0))
        self._p1 = np.zeros(1)
        self._arm1 = np.zeros(1, dtype=np.int64)
        self._c0 = 0  # where the contract arrays start in the kernel's arguments
        self._generation = 0  # bumped when a buffer of the single-call lists is replaced
        self._one = BoundCall(self.KERNEL, self._single_args)  # no contract
        self._one_contracts = BoundCall(self.KERNEL, self._single_args)
        self._lean = BoundCall(self.DECIDE_ONE, self._lean_call_args)
        self._joined = BoundCall(self.DECIDE_JOINED, self._joined_call_args)
        self._rows = BoundCall(self.DECIDE_JOINED, self._rows_call_args)
        self._out2 = np.zeros(2, dtype=np.int64)
        self._contracted = (
            BoundCall(self.DECIDE_CONTRACTED, self._contracted_args),
            BoundCall(self.DECIDE_CONTRACTED_IDS, self._contracted_ids_args),
            BoundCall(self.DECIDE_CONTRACTED_IDS, self._contracted_rows_args),
        )
        self._last_n = 0
        self._lean_room = 0  # set when the lean list is bound (see _lean_call_args)
        self._lean_version = self.state.version
        self._scratch_size = 0
        self.ensure_scratch(16)

    @property
    def probabilities(self) -> np.ndarray:
        """Choice probabilities over the last single request's candidates (a copy)."""
        return self._p1[: self._last_n].copy()

    def propensity(self, position: int) -> float:
        """Final probability of ``position`` in the last single request."""
        return self._p1.item(position)

    # ------------------------------------------------------------------ decisions
    def decide(self, candidates: Any, context: Any = None) -> Decision:
        """Choose one of ``candidates`` (arm indices); the decision carries its propensity.

        A context-free request as an int64 array goes straight to the bound
        :attr:`DECIDE_ONE` entry while its argument list is current; any other input, or
        a request the kernel refuses (it changed nothing), takes the general path, which
        checks, binds and raises."""
        lean = self._lean
        if (
            type(candidates) is np.ndarray and context is None
            and candidates.dtype is _INT64 and candidates.ndim == 1
            and candidates.flags.c_contiguous and candidates.shape[0] <= self._lean_room
        ):  # fmt: skip
            reg = self.registry
            key = (self._generation, self.state.generation, reg.generation, reg.n_arms)
            if key == lean.key and self.n_features is None:
                args = lean.args
                args[0] = candidates
                pos = lean.entry(*args)
                if pos >= 0:
                    self._last_n = candidates.shape[0]
                    return tuple.__new__(Decision, (
                        pos, candidates.item(pos), self._p1.item(pos), "", "", None, (),
                        self._lean_version.item(0), 0.0, None, None,
                    ))  # fmt: skip
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
            if self.n_features is not None:
                args[1] = x
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
        check_synced(self.registry.n_arms, self.state.n_synced)
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
        """The argument list of :attr:`DECIDE_ONE` (``cand``, and a contextual family's
        (1, d) context, placeholders until the call); ``_lean_room`` the most candidates
        its buffers hold (both change with the key)."""
        check_synced(self.registry.n_arms, self.state.n_synced)
        self._lean_room = min(self._scratch_size, self._p1.shape[0])
        self._lean_version = self.state.version
        x = () if self.n_features is None else (np.zeros((1, self.n_features)),)
        return [self._arm1, *x, *self.lean_args(), self._p1, self._err]

    def _joined_call_args(self) -> list[Any]:
        """The argument list of :attr:`DECIDE_JOINED` (``q``, ``cand``: placeholders of
        their types; ``q`` is read-only, as :meth:`ArmRegistry.joined_ids` makes it)."""
        reg = self.registry
        return [*reg.id_table(), reg.joined_ids([]), *self._lean_call_args()]

    def _rows_call_args(self) -> list[Any]:
        """:meth:`_joined_call_args` for ids as a string array's rows (``q`` (n, w)
        writeable uint32, see :meth:`decide_joined`)."""
        reg = self.registry
        return [*reg.id_table(), np.zeros((0, 1), np.uint32), *self._lean_call_args()]

    def decide_joined(
        self, q: np.ndarray, cand: np.ndarray, x: np.ndarray | None = None
    ) -> tuple[int, int, int]:
        """:meth:`decide_one` for a request without contracts whose candidates are ids,
        resolved into ``cand`` (n,) by the same compiled call (:attr:`DECIDE_JOINED`, which
        the caller checked is set): ``q`` is the ids joined by NUL
        (:meth:`ArmRegistry.joined_ids`) or a numpy string array's codepoints (n, w) C
        uint32, writeable. A contextual family takes its context ``x`` (1, d) C float64
        unchecked: the kernel refuses a non-finite or out-of-bound one after the lookup.

        Returns (position, -1, 0); (-1, status, position) of the first id the lookup
        refused (:mod:`allocator.kernels.idtable` codes); (-1, -1, 0) for a context the
        kernel refused, which the general path is to report. Nothing changes on a refusal.
        """
        n = cand.shape[0]
        if n > self._scratch_size or n > self._p1.shape[0]:
            self._grow_single(n)
        reg = self.registry
        call = self._rows if q.ndim == 2 else self._joined
        key = (self._generation, self.state.generation, reg.generation, reg.n_arms)
        args = call.args if key == call.key else call.bind(key)
        args[3], args[4] = q, cand
        if x is not None:
            args[5] = x
        pos = call.entry(*args)
        if pos < 0:
            return self._refused(pos, cand)
        self._last_n = n
        return pos, -1, 0

    def _refused(self, code: int, cand: np.ndarray) -> tuple[int, int, int]:
        """What a fused entry's refusal ``code`` tells its caller: (-1, status, position)
        of the first id the lookup refused, (-1, -1, 0) for a refused context (left to the
        general path to report); a refused candidate list is raised here."""
        if code == ck.ERR_LOOKUP:
            return -1, int(self._err[0]), int(self._err[1])
        if code == ck.ERR_NONFINITE:
            return -1, -1, 0
        self._ptr1[1] = cand.shape[0]
        self._fail(code, self._ptr1, cand, self._x_none)

    def _contracted_args(self, contracts: tuple[Any, ...]) -> list[Any]:
        """The argument list of :attr:`DECIDE_CONTRACTED` (``cand``, ``x``, ``t``, ``codes``
        and the contract arrays: placeholders of their types until the call)."""
        check_synced(self.registry.n_arms, self.state.n_synced)
        s, x = self.state, np.zeros((1, self.n_features or 0))
        self._c1 = 6 + len(self.model_args())  # where the contract arrays start
        return [
            self._arm1, x, 0.0, self._codes0, self.input_bound, self.registry.active,
            *self.model_args(), *contracts, s.stream, s.pos_of_arm, *self.scratch_args(),
            self._p1, self._out2, self._err,
        ]  # fmt: skip

    def _contracted_ids_args(self, contracts: tuple[Any, ...]) -> list[Any]:
        reg = self.registry
        return [*reg.id_table(), reg.joined_ids([]), *self._contracted_args(contracts)]

    def _contracted_rows_args(self, contracts: tuple[Any, ...]) -> list[Any]:
        return [
            *self.registry.id_table(), np.zeros((0, 1), np.uint32),
            *self._contracted_args(contracts),
        ]  # fmt: skip

    def decide_contracted(
        self, q: np.ndarray | None, cand: np.ndarray, x: np.ndarray | None, t: float,
        codes: np.ndarray, contracts: tuple[Any, ...],
    ) -> tuple[int, int, int]:  # fmt: skip
        """:meth:`decide_one` under ``contracts`` (:meth:`Contracts.kernel_args`, reserved
        for the request) by the bound :attr:`DECIDE_CONTRACTED` entry, which the caller
        checked is set: candidates as indices ``cand`` (``q`` None), or as ids ``q`` (as
        :meth:`decide_joined` takes them) resolved into ``cand`` by the same call. ``x``
        (1, d) C float64 (None: a context-free family) and ``codes`` (1, A) C int64 are
        taken unchecked: the kernel refuses a context out of bounds first.

        Returns (position, forcing contract or -1, adjusted bitmask); (-1, status,
        position) of the first id the lookup refused; (-1, -1, 0) for a refused context,
        which the general path is to report. Nothing changes on a refusal.
        """
        n = cand.shape[0]
        if n > self._scratch_size or n > self._p1.shape[0]:
            self._grow_single(n)
        reg = self.registry
        call = self._contracted[0 if q is None else q.ndim]
        key = (self._generation, self.state.generation, reg.generation, reg.n_arms)
        args = call.args if key == call.key else call.bind(key, contracts)
        b = 0 if q is None else 4
        if b:
            args[3] = q
        args[b], args[b + 2], args[b + 3] = cand, t, codes
        args[b + 1] = self._x_none if x is None else x
        c0 = b + self._c1
        args[c0 : c0 + len(contracts)] = contracts
        pos = call.entry(*args)
        if pos < 0:
            return self._refused(pos, cand)
        self._last_n = n
        forced, adjusted = self._out2.tolist()
        return pos, forced, adjusted

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
        check_synced(self.registry.n_arms, self.state.n_synced)
        args = self._args(ptr, idx, xs, times, codes, draw, contracts, probs, out)
        code = self.KERNEL(*args)
        if code < 0:
            self._fail(code, ptr, idx, xs)

    def _fail(self, code: int, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray) -> NoReturn:
        """Raise the error the kernel reported (``code`` < 0, ``err``: request, position)."""
        raise_refusal(code, self._err, ptr, idx, xs, self.registry.n_arms, self.slots)

    def _new_scratch(self, size: int) -> None:
        self.best_buf = np.empty(size)
        self.arg_buf = np.empty(size, dtype=np.int64)
        self.mean_buf = np.empty(size)
        self.sd_buf = np.empty(size)

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
