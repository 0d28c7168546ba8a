"""Contextual policies: disjoint linear Gaussian per arm, and one shared linear model.

Both sample in score space through a bank ``z`` of standard normals (slots × M): request
candidate ``j`` in bank row ``m`` scores ``mean_j + sd_j·z[j, m]``. ``z`` does not depend on
the posterior, so a refresh only re-solves the changed posteriors and redraws a rolling
window of bank rows (at most ``_Z_CELLS_PER_REFRESH`` normals), keeping refreshes cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from allocator.config import LinearGaussianConfig, SharedLinearConfig
from allocator.errors import InvalidInputError
from allocator.kernels import linear as kl
from allocator.kernels import shared_linear as ksl
from allocator.policies.base import Policy, as_float_array
from allocator.policies.per_arm import _grown
from allocator.registry import ArmRegistry

_Z_CELLS_PER_REFRESH = 1 << 16


class _ScoreBankPolicy(Policy):
    """The normal bank ``z`` and its rolling redraw."""

    _meta = (*Policy._meta, "bank_rows", "_z_cursor")

    def _after_restore(self) -> None:
        self._new_scratch(self.bank_rows, self._z.shape[0])

    def _init_bank(self, slots: int) -> None:
        self.bank_rows = int(self.config.bank_rows)
        self._z = self._rng.standard_normal((slots, self.bank_rows))
        self._z_cursor = 0
        self._new_scratch(self.bank_rows, slots)

    def _ensure_scratch(self, n_candidates: int) -> None:
        self._new_scratch(self.bank_rows, n_candidates)

    def candidate_means(self, cand: np.ndarray) -> np.ndarray:
        return self._mean_buf[: cand.shape[0]]

    def _roll_bank(self) -> None:
        slots, m_rows = self._z.shape
        step = max(1, min(m_rows, _Z_CELLS_PER_REFRESH // max(slots, 1)))
        lo = self._z_cursor
        hi = min(m_rows, lo + step)
        self._z[:, lo:hi] = self._rng.standard_normal((slots, hi - lo))
        self._z_cursor = 0 if hi == m_rows else hi


class LinearGaussianPolicy(_ScoreBankPolicy):
    """Disjoint linear Thompson sampling (or LinUCB / greedy) over d context features."""

    config: LinearGaussianConfig
    _state = (*Policy._state, "_g", "_h", "_count", "_t_last", "_mu0", "_mu", "_a_inv", "_z")
    _additive = ("_g", "_h", "_count")
    _learned = ("_n_obs", "_g", "_h", "_count", "_mu0")

    def __init__(
        self,
        config: LinearGaussianConfig,
        registry: ArmRegistry,
        seed: int,
        arm_features: Any = None,
    ) -> None:
        super().__init__(config, registry, seed)
        d = config.n_features
        self.n_features = d
        self._lam = float(config.prior_precision)
        self._v = float(config.noise_scale)
        self._g = np.zeros((0, d, d))
        self._h = np.zeros((0, d))
        self._count = np.zeros(0)
        self._t_last = np.zeros(0, dtype=np.int64)
        self._mu0 = np.zeros((0, d))
        self._mu = np.zeros((0, d))
        self._a_inv = np.zeros((0, d, d))
        self._work = np.zeros((2 * d + 1, d))
        self._init_bank(min(config.max_candidates, max(registry.capacity, 1)))
        self.sync_arms(arm_features)

    def _grow(self, capacity: int) -> None:
        self._capacity = capacity
        for name in ("_g", "_h", "_count", "_t_last", "_mu0", "_mu", "_a_inv"):
            setattr(self, name, _grown(getattr(self, name), capacity))
        slots = min(self.config.max_candidates, capacity)
        if slots > self._z.shape[0]:
            extra = self._rng.standard_normal((slots - self._z.shape[0], self.bank_rows))
            self._z = np.ascontiguousarray(np.vstack([self._z, extra]))
            self._new_scratch(self.bank_rows, slots)

    def _init_arms(self, new: np.ndarray, arm_features: Any) -> None:
        cfg = self.config
        groups = self.registry.groups
        codes = self.registry.arm_group[new]
        for code in np.unique(codes):
            sel = new[codes == code]
            prior = cfg.group_priors.get(groups[code])
            mean = np.zeros(cfg.n_features) if prior is None else np.asarray(prior.mean)
            if cfg.new_arm_prior == "empirical":
                n = self.registry.n_arms
                members = np.flatnonzero(
                    (self.registry.arm_group[:n] == code)
                    & self.registry.active[:n]
                    & (np.arange(n) < self._n_synced)
                )
                members = members[self._count[members] > 0]
                if members.size:
                    mean = self._mu[members].mean(axis=0)
            self._mu0[sel] = mean
        self._g[new] = 0.0
        self._h[new] = 0.0
        self._count[new] = 0.0
        self._t_last[new] = self._clock[0]

    def posterior(self, arms: Any) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (k, d) and precision ``A`` (k, d, d) of ``arms`` now."""
        idx = np.atleast_1d(np.asarray(arms, dtype=np.int64))
        w = self._gamma ** (self._clock[0] - self._t_last[idx]) if self._gamma != 1.0 else None
        g, h = self._g[idx], self._h[idx]
        if w is not None:
            g, h = g * w[:, None, None], h * w[:, None]
        a = g + self._lam * np.eye(self.config.n_features)
        b = h + self._lam * self._mu0[idx]
        return np.linalg.solve(a, b[..., None])[..., 0], a

    def _refresh(self) -> None:
        n = self.registry.n_arms
        idx = np.flatnonzero(self._dirty[:n])
        if idx.size:
            mu, a = self.posterior(idx)
            self._mu[idx] = mu
            self._a_inv[idx] = np.linalg.inv(a)
            self._dirty[idx] = False
        self._roll_bank()

    def _model_args(self) -> tuple[Any, ...]:
        """Arrays shared by the single and batch decide kernels (read at call time)."""
        return (
            self._mu, self._a_inv, self._v, self._z, self._rule, self._ucb_alpha, self._eps,
            self._stream, self._mean_buf, self._sd_buf, self._best, self._arg,
        )  # fmt: skip

    def _decide(self, cand: np.ndarray, x: np.ndarray | None, draw: bool = True) -> int:
        return int(kl.decide_linear(  # type: ignore[call-arg]  # numba stubs vs *args
            x, cand, self.registry.active, self._pos_of_arm, *self._model_args(), self._p,
            self._err, draw,
        ))  # fmt: skip

    def _decide_batch(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray | None,
        probs: np.ndarray, chosen: np.ndarray,
    ) -> int:  # fmt: skip
        return int(kl.decide_linear_batch(  # type: ignore[call-arg]  # numba stubs vs *args
            xs, ptr, idx, self.registry.active, self._pos_of_arm, *self._model_args(), probs,
            chosen, self._err,
        ))  # fmt: skip

    def _update(self, arm: int, reward: float, x: np.ndarray | None) -> bool:
        return bool(kl.update_linear(
            arm, x, reward, self._gamma, self._lam, self._clock, self._t_last, self._g,
            self._h, self._count, self._mu0, self._mu, self._a_inv, self._work, self._dirty,
        ))  # fmt: skip

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray | None) -> None:
        kl.update_linear_batch(
            arms, xs, rewards, self._gamma, self._lam, self._clock, self._t_last, self._g,
            self._h, self._count, self._mu0, self._mu, self._a_inv, self._work, self._dirty,
        )  # fmt: skip


class SharedLinearPolicy(_ScoreBankPolicy):
    """One linear model over vec(arm features ⊗ context): catalogue-scale memory."""

    config: SharedLinearConfig
    _state = (*Policy._state, "_g", "_h", "_mu", "_a_inv", "_features", "_z")
    _meta = (*_ScoreBankPolicy._meta, "_model_dirty")
    _additive = ("_g", "_h")
    _learned = ("_n_obs", "_g", "_h", "_features")
    _per_model = frozenset({"_g", "_h"})

    def _mark_model_dirty(self) -> None:
        self._model_dirty = True

    def __init__(
        self, config: SharedLinearConfig, registry: ArmRegistry, seed: int, arm_features: Any = None
    ) -> None:
        super().__init__(config, registry, seed)
        self.n_features = config.n_context_features
        self.n_arm_features = config.n_arm_features
        dim = config.n_context_features * config.n_arm_features
        self._lam = float(config.prior_precision)
        self._v = float(config.noise_scale)
        self._g = np.zeros((dim, dim))
        self._h = np.zeros(dim)
        self._mu = np.zeros(dim)
        self._a_inv = np.eye(dim) / self._lam
        self._features = np.zeros((0, config.n_arm_features))
        self._w_buf = np.empty(config.n_arm_features)
        self._pp_buf = np.empty((config.n_arm_features, config.n_arm_features))
        self._phi = np.empty(dim)
        self._u = np.empty(dim)
        self._model_dirty = False
        self._init_bank(config.max_candidates)
        self.sync_arms(arm_features)

    def _check_new_arm_features(self, new: np.ndarray, arm_features: Any) -> None:
        if new.size == 0 and arm_features is None:
            return
        if arm_features is None:
            raise InvalidInputError(
                f"arm_features required for {new.size} new arms: expected shape "
                f"({new.size}, {self.config.n_arm_features})"
            )
        as_float_array(arm_features, "arm_features", (new.size, self.config.n_arm_features))

    def _grow(self, capacity: int) -> None:
        self._capacity = capacity
        self._features = _grown(self._features, capacity)

    def _init_arms(self, new: np.ndarray, arm_features: Any) -> None:
        self._features[new] = np.asarray(arm_features, dtype=np.float64)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (D,) and precision (D, D) of the joint weights now."""
        a = self._g + self._lam * np.eye(self._g.shape[0])
        return np.linalg.solve(a, self._h), a

    def _refresh(self) -> None:
        if self._model_dirty:
            mu, a = self.posterior()
            self._mu = mu
            self._a_inv = np.linalg.inv(a)
            self._model_dirty = False
        self._roll_bank()

    def _model_args(self) -> tuple[Any, ...]:
        """Arrays shared by the single and batch decide kernels (read at call time)."""
        return (
            self._features, self._mu, self._a_inv, self._v, self._z, self._rule,
            self._ucb_alpha, self._eps, self._stream, self._w_buf, self._pp_buf,
            self._mean_buf, self._sd_buf, self._best, self._arg,
        )  # fmt: skip

    def _decide(self, cand: np.ndarray, x: np.ndarray | None, draw: bool = True) -> int:
        return int(ksl.decide_shared(  # type: ignore[call-arg]  # numba stubs vs *args
            x, cand, self.registry.active, self._pos_of_arm, *self._model_args(), self._p,
            self._err, draw,
        ))  # fmt: skip

    def _decide_batch(
        self, ptr: np.ndarray, idx: np.ndarray, xs: np.ndarray | None,
        probs: np.ndarray, chosen: np.ndarray,
    ) -> int:  # fmt: skip
        return int(ksl.decide_shared_batch(  # type: ignore[call-arg]  # numba stubs vs *args
            xs, ptr, idx, self.registry.active, self._pos_of_arm, *self._model_args(), probs,
            chosen, self._err,
        ))  # fmt: skip

    def _update(self, arm: int, reward: float, x: np.ndarray | None) -> bool:
        if not ksl.update_shared(
            self._features[arm], x, reward, self._gamma, self._lam, self._g, self._h, self._mu,
            self._a_inv, self._phi, self._u, self._clock,
        ):  # fmt: skip
            return False
        self._model_dirty = True
        return True

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray | None) -> None:
        ksl.update_shared_batch(
            self._features, arms, xs, rewards, self._gamma, self._lam, self._g, self._h,
            self._mu, self._a_inv, self._phi, self._u, self._clock,
        )  # fmt: skip
        self._model_dirty = True
