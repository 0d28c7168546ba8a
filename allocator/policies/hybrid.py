"""Hybrid models: shared weights over arm features ⊗ context plus a per-arm offset.

The shared model sees a merchant only through its features, so a merchant's own quality,
which its traffic reveals, is never learned. Here each arm also has an offset ``b_a`` with
prior ``N(β_g, 1/κ_g)`` (its group's mean offset and the between-arm sd): a new arm starts
from its features and its group's prior, and its own observations move the offset away
from the group as they accumulate (shrinkage). The joint posterior of ``(θ, b)`` is kept
exactly in information form (``kernels.hybrid``); a refresh marginalises the offsets out
of ``θ``'s precision (a Schur complement over the observed arms) and caches each arm's
offset posterior given ``θ``'s mean. Decisions sample each candidate's score from
``N(φᵀμ + m_a, φᵀΣφ + 1/q_a)``: the mean is the exact posterior mean, the variance omits
the (negative) posterior covariance between ``θ`` and ``b_a``, which would cost O(D²) per
candidate; the propensities are exact for this sampling procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from allocator.config import HybridLinearConfig, HybridLogisticConfig
from allocator.kernels import hybrid as kh
from allocator.policies.linear import SharedLinearPolicy, require_positive_definite
from allocator.policies.logistic import BinaryRewards
from allocator.policies.state import Field, Role

_SUM = Role.PER_ARM | Role.LEARNED | Role.ADDITIVE | Role.DECAYS
#: arms per block when the offsets are marginalised out (bounds the temporary arrays)
_BLOCK = 1 << 14

#: the per-arm offset's statistics, prior and cached posterior (beyond the shared model's)
OFFSET_FIELDS = (
    Field("t_last", np.int64, Role.PER_ARM, values="tick"),
    Field("n", np.float64, _SUM, values="count"),  # Σ w: the offset's data precision
    Field("s", np.float64, _SUM, ("d_ctx",)),  # Σ w x: the arm's cross term is f ⊗ s
    Field("r", np.float64, _SUM),  # Σ information
    Field("offset0", np.float64, Role.PER_ARM | Role.PRIOR),  # the group's mean offset
    Field("kappa", np.float64, Role.PER_ARM | Role.CACHE),  # the group's offset precision
    Field("offset_mean", np.float64, Role.PER_ARM | Role.CACHE),
    Field("offset_var", np.float64, Role.PER_ARM | Role.CACHE),
)


class HybridLinearPolicy(SharedLinearPolicy):
    """Shared linear model plus a per-arm offset with hierarchical shrinkage."""

    config: HybridLinearConfig  # type: ignore[assignment]
    KERNEL = staticmethod(kh.decide_hybrid)  # type: ignore[assignment]
    UPDATES_MOVE_DECISIONS = False  # decisions read refreshed means and variances only
    LOGIT = False
    FIELDS = (*SharedLinearPolicy.FIELDS, *OFFSET_FIELDS)  # type: ignore[assignment]

    @classmethod
    def sizes(cls, config: Any, capacity: int) -> dict[str, int]:
        return {**super().sizes(config, capacity), "d_ctx": config.n_context_features}

    def model_args(self) -> tuple[Any, ...]:
        s = self.state
        return (
            s.features, s.mu, s.a_inv, s.offset_mean, s.offset_var, self.noise, self.LINK, s.z,
            self.rule, self.ucb_alpha, self.eps,
        )  # fmt: skip

    def _prior(self, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Configured prior mean and precision ``κ`` of the offsets of ``arms``."""
        cfg = self.config
        mean, prec = [], []
        for group in self.registry.groups or ("",):
            prior = cfg.group_priors.get(group)
            sd = cfg.offset_sd if prior is None or prior.sd is None else prior.sd
            mean.append(0.0 if prior is None else prior.mean)
            prec.append(1.0 / sd**2)
        codes = self.registry.arm_group[arms]
        return np.asarray(mean)[codes], np.asarray(prec)[codes]

    def _init_arms(self, new: np.ndarray, arm_features: np.ndarray | None) -> None:
        super()._init_arms(new, arm_features)
        s = self.state
        mean, prec = self._prior(new)
        if self.config.learn_offset_sd:  # a new arm takes its group's current estimate
            k = int(s.n_synced[0])
            codes, n_groups = self.registry.arm_group, len(self.registry.groups)
            count = np.bincount(codes[:k], minlength=n_groups)
            total = np.bincount(codes[:k], s.kappa[:k], n_groups)
            has = count[codes[new]] > 0
            prec[has] = total[codes[new][has]] / count[codes[new][has]]
        if self.config.new_arm_prior == "empirical":
            k = int(s.n_synced[0])
            seen = np.flatnonzero((s.n[:k] > 0) & self.registry.active[:k])
            codes = self.registry.arm_group
            if seen.size:
                total = np.bincount(codes[seen], s.offset_mean[seen], len(self.registry.groups))
                count = np.bincount(codes[seen], minlength=len(self.registry.groups))
                has = count[codes[new]] > 0
                mean[has] = total[codes[new][has]] / count[codes[new][has]]
        s.offset0[new] = mean
        s.kappa[new] = prec
        s.offset_mean[new] = mean
        s.offset_var[new] = 1.0 / prec
        s.n[new] = 0.0
        s.s[new] = 0.0
        s.r[new] = 0.0

    def _observed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Observed arms and their ``n``, ``s``, ``r`` decayed to the clock (not stored)."""
        idx = np.flatnonzero(self.state.n[: self.registry.n_arms] > 0.0)
        return (idx, *self._decayed(idx))

    def _decayed(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n``, ``s``, ``r`` of ``idx`` decayed to the clock (copies; nothing stored)."""
        s = self.state
        n, sx, r = s.n[idx], s.s[idx], s.r[idx]
        if self.gamma != 1.0:
            w = self.gamma ** (s.clock[0] - s.t_last[idx]).astype(np.float64)
            n, sx, r = n * w, sx * w[:, None], r * w
        return n, sx, r

    def _marginal(
        self, g: np.ndarray, h: np.ndarray, idx: np.ndarray, n: np.ndarray, sx: np.ndarray,
        r: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``θ``'s marginal precision and information with the offsets of ``idx``
        integrated out."""
        q, hb = self._offset_terms(idx, n, r)
        prec = g + np.diag(self.prior_diag())
        info = h.copy()
        for lo in range(0, idx.size, _BLOCK):
            u = self._cross(idx[lo : lo + _BLOCK], sx[lo : lo + _BLOCK])
            uq = u / q[lo : lo + _BLOCK, None]
            prec -= uq.T @ u
            info -= uq.T @ hb[lo : lo + _BLOCK]
        return prec, info

    def _offset_terms(self, idx: np.ndarray, n: np.ndarray, r: np.ndarray) -> tuple[Any, Any]:
        """Per arm of ``idx``: the offset's precision ``q = κ + n`` and information
        ``κβ + r``."""
        kappa = self.state.kappa[idx]
        return kappa + n, kappa * self.state.offset0[idx] + r

    def _cross(self, idx: np.ndarray, sx: np.ndarray) -> np.ndarray:
        """The arms' cross statistics ``f_a ⊗ s_a`` as rows (k, D)."""
        f = self.state.features[idx]
        return (f[:, :, None] * sx[:, None, :]).reshape(idx.size, -1)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Marginal posterior mean (D,) and precision (D, D) of the shared weights now."""
        idx, n, sx, r = self._observed()
        prec, info = self._marginal(self.state.g, self.state.h, idx, n, sx, r)
        return np.linalg.solve(prec, info), prec

    def offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """Each registered arm's offset posterior given the shared weights' mean: mean and
        variance (as of the last refresh)."""
        k = self.registry.n_arms
        return self.state.offset_mean[:k].copy(), self.state.offset_var[:k].copy()

    def _configure(self) -> None:
        super()._configure()
        self._joint = np.empty(self.config.n_context_features * self.config.model_arm_features)

    def _refresh(self) -> None:
        s = self.state
        stale = bool(s.model_dirty[0])
        if stale and self.config.learn_offset_sd:
            self._em_offset_precision()
        super()._refresh()  # θ's marginal posterior (:meth:`posterior`) and the bank
        if stale:
            idx, n, sx, r = self._observed()
            q, hb = self._offset_terms(idx, n, r)
            for lo in range(0, idx.size, _BLOCK):
                part = idx[lo : lo + _BLOCK]
                u = self._cross(part, sx[lo : lo + _BLOCK])
                s.offset_mean[part] = (hb[lo : lo + _BLOCK] - u @ s.mu) / q[lo : lo + _BLOCK]
            s.offset_var[idx] = 1.0 / q

    def _em_offset_precision(self) -> None:
        """One EM step on each group's between-arm variance: the mean over its observed
        arms of ``(m_a − β_a)² / σ² + v_a`` under their last offset posteriors (groups
        without observed arms keep theirs); every arm of the group then uses it.

        Precisions are in units of the noise variance ``σ²`` (``noise_scale``², 1 on the
        logit scale) while the offset means are in score units, hence the division: without
        it a small ``noise_scale`` made the estimate ~1/σ² times too tight and shrank every
        offset to its group's mean."""
        s = self.state
        k = self.registry.n_arms
        codes, n_groups = self.registry.arm_group[:k], len(self.registry.groups)
        seen = s.n[:k] > 0.0
        noise2 = 1.0 if self.LOGIT else self.noise**2
        moment = (s.offset_mean[:k] - s.offset0[:k]) ** 2 / noise2 + s.offset_var[:k]
        count = np.bincount(codes[seen], minlength=n_groups)
        total = np.bincount(codes[seen], moment[seen], n_groups)
        has = count[codes] > 0
        s.kappa[:k][has] = count[codes[has]] / total[codes[has]]
        unseen = ~seen
        s.offset_var[:k][unseen] = 1.0 / s.kappa[:k][unseen]

    def _update_batch(self, arms: np.ndarray, rewards: np.ndarray, xs: np.ndarray) -> None:
        s = self.state
        kh.update_hybrid_batch(
            s.features, arms, xs, rewards, self.gamma, self.LOGIT, s.g, s.h, s.mu,
            s.offset_mean, s.clock, s.t_last, s.n, s.s, s.r, self._joint, s.dirty,
        )  # fmt: skip
        s.model_dirty[0] = True

    def _check_merged(self, merged: Mapping[str, np.ndarray], touched: np.ndarray) -> None:
        """Beyond the shared checks, ``θ``'s marginal precision (the offsets integrated
        out) must stay positive definite: a forged ``s`` larger than its ``n`` and ``g``
        allow would break it."""
        super()._check_merged(merged, touched)
        n, sx, r = self._decayed(np.arange(self.registry.n_arms))
        m = merged["n"].shape[0]
        n[:m], sx[:m], r[:m] = merged["n"], merged["s"], merged["r"]
        idx = np.flatnonzero(n > 0.0)
        prec, _ = self._marginal(merged["g"], merged["h"], idx, n[idx], sx[idx], r[idx])
        require_positive_definite(
            prec, "delta['s'] would make the shared weights' marginal precision not positive "
            "definite",
        )  # fmt: skip


class HybridLogisticPolicy(BinaryRewards, HybridLinearPolicy):
    """Shared logistic model plus a per-arm logit offset (online Laplace factors)."""

    config: HybridLogisticConfig  # type: ignore[assignment]
    LOGIT = True

    def predictive(self, arms: Any, contexts: Any) -> np.ndarray:
        """``P(reward = 1)`` of ``arms[i]`` in ``contexts[i]`` (probit approximation over
        the score's posterior, as of the last refresh)."""
        a = self.query_arms(arms)
        xs = self.context_rows(contexts, a.shape[0])
        out = np.empty(a.shape[0])
        s = self.state
        da = s.features.shape[1]
        kh.predict_hybrid(
            a, xs, s.features, s.mu, s.a_inv, s.offset_mean, s.offset_var, np.empty(da),
            np.empty((da, da)), np.empty(1), np.empty(1), out,
        )  # fmt: skip
        return out
