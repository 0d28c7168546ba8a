"""A policy's learned state as data: export, deltas between replicas, merge, adoption.

Split from :mod:`.base`: everything here is derived from the declared state
(:class:`~allocator.policies.state.ModelState`), not from a family's own code, except two
hooks a family may override.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from allocator.errors import InvalidInputError, SnapshotError
from allocator.policies.state import ModelState, Role
from allocator.registry import ArmRegistry

#: the key of a delta's family tag (the policy kind as a 0-d string array)
DELTA_KIND = "kind"
#: the largest model clock a merge may reach (observations counted, far below int64's end)
MAX_CLOCK = float(2**62)


class StateExchange:
    """Snapshot, delta and merge of :class:`~allocator.policies.base.Policy` (its only host).

    Needs from the host: ``state``, ``registry``, ``config``, ``rng``, ``gamma``, the input
    and reward bounds, :meth:`refresh`, and ``_delta_base`` / ``_delta_clock`` initialised
    (empty, 0) at set-up.
    """

    state: ModelState
    registry: ArmRegistry
    config: Any
    rng: np.random.Generator
    gamma: float
    input_bound: float
    reward_bound: float
    _delta_base: dict[str, np.ndarray]
    _delta_clock: int

    if TYPE_CHECKING:

        def refresh(self) -> None: ...

    def export_state(self, copy: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Every saved state array (copies unless ``copy=False``: see
        :meth:`ModelState.snapshot`), plus JSON-able meta (the bank RNG state)."""
        return self.state.snapshot(copy), {
            "kind": self.config.kind,
            "rng": self.rng.bit_generator.state,
        }

    def adopt_learned(self, other: StateExchange) -> None:
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
        delta[DELTA_KIND] = np.array(self.config.kind)
        return delta

    def merge(self, delta: Mapping[str, Any]) -> None:
        """Fold a replica's :meth:`export_delta` into this policy, then refresh.

        The delta is checked whole (names, shapes, finiteness), and so is the posterior it
        would produce (finite, counts non-negative, within what observations inside the
        input bounds can sum to, and any family-specific validity), before anything changes.
        """
        arrays = self._family_arrays(delta)
        checked = self.state.check_delta(
            arrays, self.registry.n_arms, f"a {self.config.kind} policy"
        )
        n_obs = checked["n_obs"]
        # float sum: an int64 sum of forged counts can wrap to a small number
        added = float(n_obs.sum(dtype=np.float64))
        if float(self.state.clock[0]) + added > MAX_CLOCK:
            raise InvalidInputError(
                f"delta claims {added:g} observations: the model clock would pass {MAX_CLOCK:g}"
            )
        merged = self.state.merged(checked, self.gamma, self._statistic_limit(added))
        touched = self.state.touched_rows(checked)
        self._check_merged(merged, touched)
        self.settle()
        k = self.state.put(merged)
        self.state.clock[0] += int(added)
        if "t_last" in self.state.names:
            self.state.t_last[:k] = self.state.clock[0]
        self.state.dirty[:k] |= touched
        self._learned_changed()
        self.refresh()

    def _family_arrays(self, delta: Mapping[str, Any]) -> Mapping[str, Any]:
        """The delta's statistics once its family tag (:data:`DELTA_KIND`) is this policy's:
        families with the same arrays (logistic and linear Gaussian, say) hold different
        quantities in them."""
        if not isinstance(delta, Mapping):
            raise InvalidInputError(
                f"delta must be a mapping of arrays, got {type(delta).__name__}"
            )
        if DELTA_KIND not in delta:
            raise InvalidInputError(
                f"delta lacks its family tag {DELTA_KIND!r}: not an export_delta() of a "
                f"{self.config.kind} policy"
            )
        tag = np.asarray(delta[DELTA_KIND])
        kind = str(tag) if tag.ndim == 0 and tag.dtype.kind == "U" else None
        if kind != self.config.kind:
            raise InvalidInputError(
                f"delta is from a {kind or 'unknown'} policy, this is a {self.config.kind} policy"
            )
        return {name: value for name, value in delta.items() if name != DELTA_KIND}

    def check_restored_statistics(self) -> None:
        """The learned statistics of a restored state must pass a merge's checks, as if the
        whole state were one fleet delta: a forged file cannot install what a forged delta
        could not. :class:`SnapshotError` naming what is impossible."""
        s = self.state
        k = self.registry.n_arms
        limit = self._statistic_limit(0)
        stats = {}
        for f in s.select(Role.ADDITIVE):
            value = getattr(s, f.name)
            stats[f.name] = value[:k] if f.has(Role.PER_ARM) else value
            if value.dtype.kind == "f" and not np.abs(value).max(initial=0.0) <= limit:
                raise SnapshotError(
                    f"state array {f.name!r} is beyond {limit:g} in magnitude: more than "
                    f"{int(s.clock[0])} observations within the input bounds can sum to"
                )
        try:
            self._check_merged(stats, s.n_obs[:k] > 0)
        except InvalidInputError as err:
            raise SnapshotError(f"restored statistics are impossible: {err}") from None

    def _statistic_limit(self, new_observations: float) -> float:
        """The largest magnitude a statistic can reach from the clock's observations plus
        ``new_observations``, every input and reward within its bound."""
        scale = max(1.0, self.input_bound, self.reward_bound) ** 2
        return (float(self.state.clock[0]) + float(new_observations) + 1.0) * scale

    def _check_merged(self, merged: Mapping[str, np.ndarray], touched: np.ndarray) -> None:
        """Family hook: raise :class:`InvalidInputError` if ``merged`` statistics (see
        :meth:`ModelState.merged`; ``touched`` marks the arms the delta observed) cannot be a
        valid posterior's (the conjugate families need nothing beyond the field checks)."""

    def _learned_changed(self) -> None:
        """Hook for models with one shared posterior: evidence changed outside updates."""
