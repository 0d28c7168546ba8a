"""The engine: one policy, its contracts and its arm catalogue, decided through one pipeline.

Single requests and CSR batches run the same compiled pipeline (score → rule → ε-mix →
contracts → draw), so the same seed gives the same decisions either way. The engine owns
the catalogue: :meth:`Engine.add_arms` and :meth:`Engine.retire_arms` cost in proportion to
the arms changed, and new arms start from their group's prior. It is not thread-safe: the
serving facade serialises calls (and keeps catalogue growth off its decision lock).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from allocator.constraints import ConstraintReport, ConstraintSet, Contracts
from allocator.decisions import Decision, Decisions, named_constraints, new_decision
from allocator.engine.attrs import encode_plain
from allocator.engine.candidates import resolve_batch
from allocator.errors import InvalidInputError, SnapshotError
from allocator.inputs import as_float_array, as_id_list, as_index_array, check_csr
from allocator.policies import Policy, PolicyConfig, make_policy, policy_class
from allocator.registry import ArmRegistry, IntIds
from allocator.timestamps import as_epoch_seconds

#: key prefix of the policy's arrays in an engine snapshot
POLICY_PREFIX = "policy."


class Engine:
    """A policy under contracts over a live arm catalogue.

    Given a built :class:`Policy`, the engine serves from it (and its registry); given a
    policy config, it builds one over ``registry`` with ``seed`` (and ``arm_features`` for
    the shared linear family). Either way the registry is claimed for the policy: arms are
    then added and retired through :meth:`add_arms` and :meth:`retire_arms` only.

    Time: each request carries epoch seconds (UTC). Under contracts the time is required:
    it decides which schedules are live and starts an arm's cold-start clock the first time
    the arm is a candidate (``first_seen``), so it should be the request's real time and
    move forward. The engine checks only that it is finite; range, skew and jumps are the
    :class:`allocator.Allocator` facade's checks. Without contracts a missing time is 0.
    """

    def __init__(
        self,
        policy: PolicyConfig | Policy,
        constraints: ConstraintSet | None = None,
        registry: ArmRegistry | None = None,
        seed: int = 0,
        arm_features: Any = None,
    ) -> None:
        if isinstance(policy, Policy):
            self.policy = policy
        else:
            self.policy = make_policy(policy, registry or ArmRegistry(), seed, arm_features)
        self.contracts = Contracts(constraints, self.policy.registry)
        # the catalogue is claimed for the policy, whose per-arm state must follow it: an
        # engine that takes the policy over (a contract-only reload) inherits the claim
        self.policy.registry.claim(self.policy)

    @property
    def registry(self) -> ArmRegistry:
        return self.policy.registry

    # ------------------------------------------------------------------- decisions
    def decide(
        self,
        candidates: Any,
        context: Any = None,
        attrs: Mapping[str, str] | None = None,
        timestamp: Any = None,
    ) -> Decision:
        """Choose among ``candidates`` (arm indices or ids) for one request at ``timestamp``
        (required under contracts, see the class docstring)."""
        t = (
            timestamp if type(timestamp) is float and math.isfinite(timestamp)
            else self.request_time(timestamp)
        )  # fmt: skip
        cand, x, codes = self.prepare(candidates, context, attrs)
        pos, forced, adjusted = self.decide_prepared(cand, x, codes, t)
        return self.decision(cand, pos, forced, adjusted, t, given_id=given_id(candidates, pos))

    def request_time(self, timestamp: Any) -> float:
        """Epoch seconds of a request; a missing time is 0 without contracts and refused
        under them: it would switch schedules off and start cold-start clocks in 1970."""
        if timestamp is None:
            if self.contracts.names:
                raise InvalidInputError(
                    "timestamp is required when contracts are configured (their schedules "
                    "and cold-start clocks run on request time)"
                )
            return 0.0
        return as_epoch_seconds(timestamp)

    def prepare(
        self, candidates: Any, context: Any, attrs: Mapping[str, str] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One request checked and shaped for :meth:`decide_prepared`: candidate indices,
        a (1, d) context row and a (1, A) attribute-code row. Nothing changes."""
        return (
            self.resolve(candidates),
            self.policy.context_row(context),
            self.contracts.encode(attrs),
        )

    def decide_prepared(
        self, cand: np.ndarray, x: np.ndarray, codes: np.ndarray, t: float
    ) -> tuple[int, int, int]:
        """The pipeline on a prepared request: (position, forcing contract or -1, adjusted
        bitmask). The probabilities stay in :attr:`probabilities` until the next call."""
        contracts = self.contracts
        if contracts.names:
            contracts.reserve(self.registry.capacity, cand.shape[0])
            args = contracts.kernel_args(self.registry.arm_group, self.policy.state.n_obs)
            return self.policy.decide_one(cand, x, t, codes, args)
        return self.policy.decide_one(cand, x, t, codes, None)

    def decision(
        self, cand: np.ndarray, pos: int, forced: int, adjusted: int, t: float,
        decision_id: str | None = None, request_id: str | None = None,
        given_id: str | None = None,
    ) -> Decision:  # fmt: skip
        """The :class:`Decision` for the last :meth:`decide_prepared` call (``given_id``: the
        chosen arm's id as the caller gave it, see :func:`given_id`; else looked up)."""
        arm = cand.item(pos)
        forced_by, adjusted_by = (
            (None, ()) if forced < 0 and not adjusted
            else named_constraints(forced, adjusted, self.contracts.names)
        )  # fmt: skip
        reg = self.registry
        return new_decision((
            pos, arm, self.policy.propensity(pos), given_id or reg.arm_id(arm), reg.group_of(arm),
            forced_by, adjusted_by, self.policy.version, t, decision_id, request_id,
        ))  # fmt: skip

    def decision_at(self, batch: Decisions, r: int) -> Decision:
        """Request ``r`` of a batch as a :class:`Decision` (for logs and callers that want
        one object per request; the batch arrays stay the fast path)."""
        arm = int(batch.arms[r])
        reg = self.registry
        return Decision(
            int(batch.positions[r]), arm, float(batch.propensities[r]), reg.arm_id(arm),
            reg.group_of(arm), batch.forced_by(r), batch.adjusted_by(r), batch.model_version,
            float(batch.timestamps[r]),
        )  # fmt: skip

    def decide_batch(
        self,
        cand_ptr: Any,
        cand_idx: Any,
        contexts: Any = None,
        timestamps: Any = None,
        attrs: Sequence[Mapping[str, str] | None] | Mapping[str, Any] | None = None,
        draw: bool = True,
    ) -> Decisions:
        """Decide R requests given as CSR candidate lists, contracts included.

        ``timestamps`` (R,) epoch seconds (required under contracts when drawing, else
        default 0); ``attrs`` is one mapping per request, or one string array per attribute
        (R,) — the vectorised form. ``draw=False`` gives the policy's ε-mixed probabilities
        only (no contract, no draw, stream untouched).
        """
        ptr, idx = check_csr(cand_ptr, cand_idx)
        n_req = ptr.shape[0] - 1
        xs = self.policy.context_rows(contexts, n_req)
        if timestamps is None:
            if draw:
                self.request_time(None)
            times = np.zeros(n_req)
        else:
            times = as_float_array(timestamps, "timestamps", (n_req,))
        codes = self.encode_attrs(attrs, n_req)
        return self.decide_checked(ptr, idx, xs, times, codes, draw)

    def decide_checked(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray, times: np.ndarray,
        codes: np.ndarray, draw: bool = True,
    ) -> Decisions:  # fmt: skip
        """:meth:`decide_batch` of a batch already shaped: int64 CSR ``ptr``/``idx``, (R, d)
        float64 contexts, (R,) times and (R, A) attribute codes (:meth:`encode_attrs`).
        Candidates and contexts are the kernel's checks; nothing changes on a refusal."""
        names = self.contracts.names
        self.contracts.reserve(self.registry.capacity, int(np.diff(ptr).max(initial=1)))
        args = None
        if names and draw:
            args = self.contracts.kernel_args(self.registry.arm_group, self.policy.state.n_obs)
        return self.policy.decide_many(ptr, idx, xs, times, codes, args, draw, names)

    def encode_attrs(self, attrs: Any, n_req: int) -> np.ndarray:
        """Request attributes of a batch as an (R, A) code matrix."""
        if attrs is None:
            return np.zeros((n_req, self.contracts.n_attrs), dtype=np.int64)
        if isinstance(attrs, Mapping):
            return self.contracts.encode_columns(attrs, n_req)
        if len(attrs) != n_req:
            raise InvalidInputError(f"attrs has {len(attrs)} entries for {n_req} requests")
        codes = self.encode_plain_attrs(attrs)
        return self.contracts.encode_many(attrs) if codes is None else codes

    def encode_plain_attrs(self, attrs: Sequence[Any]) -> np.ndarray | None:
        """:meth:`encode_attrs` of a list whose entries are all None or a ``dict`` of str
        to str, by passes over the whole batch (:mod:`allocator.engine.attrs`); None for
        any other list (nothing raised: :meth:`encode_attrs` names the bad request)."""
        compiled = self.contracts.compiled
        return encode_plain(attrs, compiled.attrs, compiled.vocab)

    def resolve(self, candidates: Any) -> np.ndarray:
        """Candidate arm indices from indices or ids: a list of str, a numpy string array or
        :class:`IntIds`, resolved by the registry in one compiled call."""
        if isinstance(candidates, np.ndarray) and candidates.dtype.kind in "iu":
            return as_index_array(candidates, "candidates")
        if isinstance(candidates, np.ndarray):
            ids = candidates.dtype.kind == "U"
        elif isinstance(candidates, (list, tuple)):
            ids = bool(candidates) and isinstance(candidates[0], str)
        else:
            ids = isinstance(candidates, IntIds)
        return self.registry.lookup(candidates) if ids else as_index_array(candidates, "candidates")

    def resolve_many(self, given: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """CSR offsets and arm indices of R requests' candidate lists, each in any form
        :meth:`resolve` takes: one compiled lookup for the whole batch when they share a
        form (:mod:`allocator.engine.candidates`), else request by request. Raises as
        :meth:`resolve` of the first request that fails."""
        batch = resolve_batch(self.registry, given)
        if batch is not None:
            return batch
        cands = [self.resolve(c) for c in given]
        ptr = np.zeros(len(cands) + 1, dtype=np.int64)
        np.cumsum([c.shape[0] for c in cands], out=ptr[1:])
        idx = np.concatenate(cands) if cands else np.zeros(0, dtype=np.int64)
        return ptr, idx

    @property
    def probabilities(self) -> np.ndarray:
        """Final choice probabilities of the last single request (contracts included)."""
        return self.policy.probabilities

    # -------------------------------------------------------------------- learning
    def update(self, arm: int, reward: float, context: Any = None) -> None:
        self.policy.update(arm, reward, context)

    def update_batch(self, arms: Any, rewards: Any, contexts: Any = None) -> None:
        self.policy.update_batch(arms, rewards, contexts)

    # ------------------------------------------------------------------ catalogue
    def add_arms(self, ids: Sequence[str], group: str, features: Any = None) -> np.ndarray:
        """Register ``ids`` in ``group`` and give them state from the group's prior.

        A retired id comes back with its index and learned state. All or nothing: bad ids,
        group or features raise before anything changes. Returns the arms' indices.
        """
        ids = as_id_list(ids, "ids")
        self.registry.check_new(ids, group)
        fresh = int(np.count_nonzero(~self.registry.known(ids)))
        feats = self.policy.check_arm_features(fresh, features)
        idx = self.registry.add(ids, group, by=self.policy)
        self.policy.sync_arms(feats)
        self.contracts.reserve(self.registry.capacity, 0)
        return idx

    def retire_arms(self, ids: Sequence[str]) -> np.ndarray:
        """Stop serving ``ids`` from the next decision on; their state is kept."""
        return self.registry.retire(ids, by=self.policy)

    # ----------------------------------------------------------- contracts, reload
    def set_constraints(self, spec: ConstraintSet) -> None:
        """Compile ``spec`` and swap it in; unchanged constraints keep their queues."""
        new = Contracts(spec, self.registry)
        new.carry_from(self.contracts)
        self.contracts = new

    @property
    def constraints(self) -> ConstraintSet:
        """The contract set in force."""
        return self.contracts.spec

    def report(self) -> list[ConstraintReport]:
        return self.contracts.report()

    # ------------------------------------------------------------------- snapshots
    def export_state(self, copy: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Copies of every array (policy state, registry, contract queues) and the policy's
        JSON meta: all a :meth:`restore` needs besides the configuration. ``copy=False``
        leaves the policy's arrays live (a save that writes them at once)."""
        arrays, meta = self.policy.export_state(copy)
        out = {POLICY_PREFIX + k: v for k, v in arrays.items()}
        out.update(self.registry.to_arrays())
        out.update(self.contracts.export_state())
        return out, meta

    @classmethod
    def restore(
        cls, policy_config: PolicyConfig, constraints: ConstraintSet, seed: int,
        arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], copy: bool = True,
    ) -> Engine:  # fmt: skip
        """Rebuild an engine exactly as exported: it then makes the same decisions. Every
        array is checked before anything is built (:class:`SnapshotError` otherwise).
        ``copy=False`` lets the policy adopt ``arrays`` that nobody else holds."""
        try:
            registry = ArmRegistry.from_arrays(dict(arrays))
        except (KeyError, TypeError, ValueError) as err:
            raise SnapshotError(f"registry arrays are missing or inconsistent: {err}") from None
        policy_arrays = {
            k[len(POLICY_PREFIX) :]: v for k, v in arrays.items() if k.startswith(POLICY_PREFIX)
        }
        policy = policy_class(policy_config).restore(
            policy_config, registry, seed, policy_arrays, meta, copy
        )
        engine = cls(policy, constraints)
        engine.contracts.restore_state(arrays)
        return engine


def given_id(candidates: Any, pos: int) -> str | None:
    """The id at ``pos`` of candidates given as a list or tuple of str (which resolved to
    exactly those arms), so a decision need not spell it back from the registry; else None."""
    if isinstance(candidates, (list, tuple)):
        given = candidates[pos]
        return given if type(given) is str else None
    return None
