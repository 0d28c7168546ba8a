"""Logistic (GLM) Thompson sampling: disjoint per arm, and one shared model.

Binary rewards (click, order) are modelled as ``y ~ Bernoulli(σ(x·θ))`` instead of a
Gaussian: a linear model fitted to such rewards ranks arms of different ``‖θ‖`` wrongly.
The posterior is the online Laplace one (``kernels.logistic``), kept in the same
information form as the linear families, so their state declarations, refresh, fleet merge
checks and score-bank decisions carry over unchanged: ranking by a sampled logit ``x·θ`` is
ranking by ``σ(x·θ)``, and the propensities stay exact. What differs is the update, the
reward domain, and the expected reward contracts weigh (the predictive probability).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from allocator.config import LogisticConfig, SharedLogisticConfig
from allocator.errors import InvalidInputError, SnapshotError, UnknownArmError
from allocator.inputs import as_index_array
from allocator.kernels import link as klink
from allocator.kernels import logistic as klg
from allocator.policies.linear import LinearGaussianPolicy, SharedLinearPolicy
from allocator.policies.state import Field, Role


class BinaryRewards:
    """Rewards in [0, 1] (a fraction is a soft label), and the arms of a predictive query."""

    REWARD_RANGE = (0.0, 1.0)
    LINK = klink.LINK_LOGIT
    registry: Any

    def _check_rewards(self, rewards: np.ndarray) -> None:
        bad = (rewards < 0.0) | (rewards > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"reward[{i}] = {float(rewards[i])}: the logistic families expect rewards in "
                "[0, 1] (click, order)"
            )

    def query_arms(self, arms: Any) -> np.ndarray:
        a = as_index_array(arms, "arms")
        bad = (a < 0) | (a >= self.registry.n_arms)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UnknownArmError(f"arms[{i}] = {a[i]} is not a registered arm index")
        return a


#: per-arm ring buffer of the last observations (``refit_buffer`` > 0 only): context, label,
#: the logit its factor in ``g``, ``h`` was last linearised at, its tick; and how many were
#: ever recorded. Saved with the state, not carried into a reconfigured policy: an empty
#: buffer only means every factor stays as linearised.
REFIT_FIELDS = (
    Field("buf_x", np.float64, Role.PER_ARM, ("buf", "d")),
    Field("buf_y", np.float64, Role.PER_ARM, ("buf",)),
    Field("buf_z", np.float64, Role.PER_ARM, ("buf",)),
    Field("buf_t", np.int64, Role.PER_ARM, ("buf",), values="tick"),
    Field("buf_n", np.int64, Role.PER_ARM, values="count"),
)
#: Newton steps of a refit at most (a cap: it stops once a step moves the mean < 1e-10)
REFIT_STEPS = 8


class LogisticPolicy(BinaryRewards, LinearGaussianPolicy):
    """Disjoint logistic Thompson sampling (or UCB / greedy on the logit) over d features,
    optionally refitting recently updated arms to their buffer's exact MAP at refreshes."""

    config: LogisticConfig  # type: ignore[assignment]

    UPDATE = staticmethod(klg.update_logistic_batch)

    @classmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        return {**super().sizes(config, capacity), "buf": config.refit_buffer}

    def _configure(self) -> None:
        super()._configure()
        size = self.config.refit_buffer
        if size:  # replay walks read UPDATE: this one they run through update_batch
            self.FIELDS = LinearGaussianPolicy.FIELDS + REFIT_FIELDS  # type: ignore[misc,assignment]
            self.UPDATE = klg.update_logistic_buffered_batch  # type: ignore[misc,assignment]
            d = self.config.n_features
            self._ws, self._mats, self._vecs = np.empty(size), np.empty((3, d, d)), np.empty((5, d))
            self._step_work = np.zeros((2 * d + 2, d))

    @classmethod
    def restore(
        cls, config: Any, registry: Any, seed: int, arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any], copy: bool = True,
    ) -> LogisticPolicy:  # fmt: skip
        """:meth:`Policy.restore`, and buffered observations within what an update accepts
        (labels in [0, 1], contexts within ``max_abs_input``): a refit trusts them."""
        policy: LogisticPolicy = super().restore(config, registry, seed, arrays, meta, copy)  # type: ignore[assignment]
        if config.refit_buffer:
            s = policy.state
            bound = policy.input_bound
            if s.buf_y.size and (s.buf_y.min() < 0.0 or s.buf_y.max() > 1.0):
                raise SnapshotError("state array 'buf_y' holds labels outside [0, 1]")
            if s.buf_x.size and np.abs(s.buf_x).max() > bound:
                raise SnapshotError(f"state array 'buf_x' holds values beyond {bound:g}")
        return policy

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None:
        if not self.config.refit_buffer:
            super()._update_batch(arms, rewards, xs)
            return
        s = self.state
        klg.update_logistic_buffered_batch(
            arms, xs, rewards, self.gamma, self.lam, s.clock, s.t_last, s.g, s.h, s.count,
            s.mu0, s.mu, s.a_inv, self._step_work, s.dirty, s.buf_x, s.buf_y, s.buf_z, s.buf_t,
            s.buf_n,
        )  # fmt: skip

    def _refresh(self) -> None:
        if self.config.refit_buffer:
            s = self.state
            idx = np.flatnonzero(s.dirty[: self.registry.n_arms])
            klg.refit_logistic(
                idx, self.gamma, self.lam, s.clock, s.t_last, s.g, s.h, s.count, s.mu0, s.mu,
                s.buf_x, s.buf_y, s.buf_z, s.buf_t, s.buf_n, REFIT_STEPS, self._ws,
                self._mats, self._vecs,
            )  # fmt: skip
        super()._refresh()

    def predictive(self, arms: Any, contexts: Any) -> np.ndarray:
        """``P(reward = 1)`` of ``arms[i]`` in ``contexts[i]`` under the posterior decisions
        use, ``σ(xᵀm / √(1 + π s²/8))`` with ``s² = xᵀA⁻¹x`` (probit approximation)."""
        a = self.query_arms(arms)
        xs = self.context_rows(contexts, a.shape[0])
        out = np.empty(a.shape[0])
        klg.predict_disjoint(a, xs, self.state.mu, self.state.a_inv, np.empty(1), np.empty(1), out)
        return out


class SharedLogisticPolicy(BinaryRewards, SharedLinearPolicy):
    """One logistic model over vec(arm features ⊗ context): catalogue-scale memory."""

    config: SharedLogisticConfig  # type: ignore[assignment]

    UPDATE = staticmethod(klg.update_shared_logistic_batch)

    def predictive(self, arms: Any, contexts: Any) -> np.ndarray:
        """``P(reward = 1)`` of ``arms[i]`` in ``contexts[i]`` (see
        :meth:`LogisticPolicy.predictive`); with forgetting, as of the last refresh."""
        a = self.query_arms(arms)
        xs = self.context_rows(contexts, a.shape[0])
        out = np.empty(a.shape[0])
        s = self.state
        da = s.features.shape[1]
        klg.predict_shared(
            a, xs, s.features, s.mu, s.a_inv, np.empty(da), np.empty((da, da)), np.empty(1),
            np.empty(1), out,
        )  # fmt: skip
        return out
